"""A second VSML, written independently of ``vsml_es``: whole online episodes in plain NumPy.

Why: ``vsml_es.reference`` shares the cell, the message routing, the error and the read-out with
the fast path, so a mistake in any of them would be in both. This module imports nothing from
``vsml_es``. It follows the official code (github.com/louiskirsch/vsml-neurips2021, commit
5b696c9) function by function, one connection at a time, in float64; each function names the
official one it follows. The only thing it takes from vsml-es is the parameter layout:

    lstm_w [2m + s, 4s]  rows [forward message (m); backward message (m); h (s)],
                         columns the gates i, g, f, o (s each)
    lstm_b [4s];  fwd_w [s, m], fwd_b [m];  bwd_w [s, m], bwd_b [m]

which is the official one (``recurrent.CustomLSTM``: one Linear on concat([fwd, bwd, h]) split
into i, g, f, o; ``models.SubRNN``: two Linear messengers on h). States are ``[n_in, n_out, s]``.
The paper's deep variants add to that layout (``sub_rnn_params`` reads it):

    fwd_ln_scale, fwd_ln_offset, bwd_ln_scale, bwd_ln_offset [m]   SubRNN's two LayerNorms
    a leading [layers] axis on every array                          layerwise_rnns
    every array again under the prefix back_                        separate_backward_rnn

Conv layers (``vsml_layers.conv2d``, ``models.ConvSpec``) keep one state per kernel connection,
``[kernel, kernel, in_channels, out_channels, s]``, and hold messages as images:
forward ``[height, width, in_channels, m]``, backward ``[out_height, out_width, out_channels, m]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]

# recurrent.py, CustomLSTM.__call__: f = sigmoid(f + 5), i = sigmoid(i - 5).
FORGET_OFFSET = 5.0
INPUT_OFFSET = -5.0
# configs/default.yaml, model.vsml_rnn: output_idx 1, tanh_bound 100, num_micro_ticks 2.
OUTPUT_IDX = 1
TANH_BOUND = 100.0
MICRO_TICKS = 2
# configs/default.yaml, model.sub_rnn: slow_size 16, msg_size 8, init_rand_proportion 0.5.
STATE_SIZE = 16
MESSAGE_SIZE = 8
INIT_RAND_PROPORTION = 0.5
# haiku.initializers.TruncatedNormal: a standard normal cut at +-2, times stddev.
TRUNCATION = 2.0
# haiku.LayerNorm's default eps (SubRNN builds hk.LayerNorm((-1,), True, True) without one).
LAYER_NORM_EPS = 1e-5
SUB_RNN_NAMES = ("lstm_w", "lstm_b", "fwd_w", "fwd_b", "bwd_w", "bwd_b")
LAYER_NORM_NAMES = ("fwd_ln_scale", "fwd_ln_offset", "bwd_ln_scale", "bwd_ln_offset")
BACKWARD_PREFIX = "back_"


@dataclass(frozen=True)
class OracleConfig:
    """The official ``model.vsml_rnn`` switches this oracle supports."""

    hidden_layers: tuple[int, ...] = ()
    micro_ticks: int = MICRO_TICKS
    backward_pass: bool = False
    feed_label: bool = False
    output_bound: float = TANH_BOUND
    layer_norm: bool = False  # model.sub_rnn.layer_norm
    layerwise_rnns: bool = False  # model.vsml_rnn.layerwise_rnns
    separate_backward_rnn: bool = False  # model.vsml_rnn.separate_backward_rnn
    # Conv layers before the dense ones, (out_channels, kernel_size, stride) each (official
    # layer_specs entries of type conv), on images of input_shape (height, width, channels).
    conv_layers: tuple[tuple[int, int, int], ...] = ()
    input_shape: tuple[int, ...] = ()
    # official: vsml_layers.conv's backward routing as written; full: the transposed conv.
    conv_routing: str = "official"


@dataclass
class LayerState:
    """models.LayerState: the LSTM states and the last messages sent to this layer."""

    h: np.ndarray  # [n_in, n_out, s] (conv: [k, k, in_c, out_c, s])
    c: np.ndarray  # [n_in, n_out, s]
    incoming_fwd: np.ndarray  # [n_in, m] (conv: [height, width, in_c, m])
    incoming_bwd: np.ndarray  # [n_out, m] (conv: [out_height, out_width, out_c, m])


@dataclass
class Episode:
    """Per-step bounded logits [T, n_out] and losses [T] (each prediction made before its
    label), and where the episode ended: every layer's state and held messages, and the error
    the next forward tick would get."""

    logits: np.ndarray
    losses: np.ndarray
    layers: list[LayerState]
    error: np.ndarray  # [n_out, 2]

    @property
    def states(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(ls.h, ls.c) for ls in self.layers]

    @property
    def next_bwd(self) -> list[np.ndarray]:
        """Each layer's backward input in the next forward tick."""
        m = self.layers[0].incoming_fwd.shape[-1]
        return [ls.incoming_bwd for ls in self.layers[:-1]] + [pad_slots(self.error, m)]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_step(
    params: Params, inputs: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """recurrent.py, CustomLSTM.__call__: one connection's LSTM step."""
    gated = np.concatenate([inputs, h]) @ params["lstm_w"] + params["lstm_b"]
    i, g, f, o = np.split(gated, 4)
    f = sigmoid(f + FORGET_OFFSET)
    i = sigmoid(i + INPUT_OFFSET)
    c = f * c + i * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def sub_rnn_params(params: Params, cfg: OracleConfig, layer: int, backward: bool) -> Params:
    """models.VSMLRNN.__init__: the SubRNN of layer ``layer`` in a forward or backward tick.
    One SubRNN for all layers, or one per layer (layerwise_rnns); the backward tick runs the
    forward SubRNNs unless separate_backward_rnn gives it its own (shared or per layer too)."""
    prefix = BACKWARD_PREFIX if backward and cfg.separate_backward_rnn else ""
    names = SUB_RNN_NAMES + (LAYER_NORM_NAMES if cfg.layer_norm else ())
    chosen = {}
    for name in names:
        value = params[prefix + name]
        chosen[name] = value[layer] if cfg.layerwise_rnns else value
    return chosen


def layer_norm(x: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """haiku.LayerNorm over the one message axis: (x - mean) / sqrt(var + eps) * scale +
    offset, with the population variance."""
    centred = x - x.mean()
    return centred / math.sqrt((centred**2).mean() + LAYER_NORM_EPS) * scale + offset


def sub_rnn(
    params: Params, fwd_msg: np.ndarray, bwd_msg: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """models.py, SubRNN.__call__: LSTM step, then both messengers on h, each followed by its
    own LayerNorm when the SubRNN has them (layer_norm on)."""
    h, c = lstm_step(params, np.concatenate([fwd_msg, bwd_msg]), h, c)
    fwd = h @ params["fwd_w"] + params["fwd_b"]
    bwd = h @ params["bwd_w"] + params["bwd_b"]
    if "fwd_ln_scale" in params:
        fwd = layer_norm(fwd, params["fwd_ln_scale"], params["fwd_ln_offset"])
        bwd = layer_norm(bwd, params["bwd_ln_scale"], params["bwd_ln_offset"])
    return fwd, bwd, h, c


def dense(
    params: Params, fwd_msg: np.ndarray, bwd_msg: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vsml_layers.py, dense with reduce_fn = jnp.mean: connection (a, b) reads the forward
    message of input a and the backward message of output b; forward messages are averaged
    over inputs a, backward messages over outputs b."""
    n_in, n_out, _ = h.shape
    m = fwd_msg.shape[1]
    fwd_ab = np.zeros((n_in, n_out, m))
    bwd_ab = np.zeros((n_in, n_out, m))
    h_new, c_new = np.zeros_like(h), np.zeros_like(c)
    for a in range(n_in):
        for b in range(n_out):
            fwd_ab[a, b], bwd_ab[a, b], h_new[a, b], c_new[a, b] = sub_rnn(
                params, fwd_msg[a], bwd_msg[b], h[a, b], c[a, b]
            )
    return fwd_ab.mean(axis=0), bwd_ab.mean(axis=1), h_new, c_new


def pad_slots(values: np.ndarray, m: int) -> np.ndarray:
    """[..., k] -> [..., m]: the k values in the first slots, zeros after (official jnp.pad)."""
    zeros = np.zeros((*values.shape[:-1], m - values.shape[-1]))
    return np.concatenate([values, zeros], axis=-1)


Base = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def conv(
    base: Base, stride: int, routing: str, params: Params, fwd_msg: np.ndarray,
    bwd_msg: np.ndarray, h: np.ndarray, c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vsml_layers.conv with reduce_fn = jnp.mean: a convolution along axis 0.

    fwd_msg [width, ...], bwd_msg [out_width, ...], states [kwidth, ...]. The forward
    messages are zero-padded by kwidth // 2 on both sides; output position p reads padded
    positions p * stride + j (j < kwidth) and runs ``base`` on each with kernel slice j of
    the states and its own backward message. The new states are the mean over positions of
    what each position computed; the forward output of p the mean over j.
    Backward output of input position x: official routing is the code as written, slot j
    reads output position clip(x + j - 1) // stride at kernel slice kwidth - 1 - j, counted
    if x + j - 1 >= 0, < width // stride and divisible by stride; full routing scatters
    each (p, j) to the input position it read, p * stride + j - kwidth // 2. Either way the
    sum is divided by kwidth (a mean over slots, empty slots counting as zeros).
    """
    kwidth = h.shape[0]
    pad = kwidth // 2
    width = fwd_msg.shape[0]
    border = np.zeros((pad, *fwd_msg.shape[1:]))
    padded = np.concatenate([border, fwd_msg, border])
    starts = list(range(0, padded.shape[0] - kwidth + 1, stride))
    fwd_out, bwd_out, h_out, c_out = [], [], [], []
    for p, start in enumerate(starts):
        row = [base(params, padded[start + j], bwd_msg[p], h[j], c[j]) for j in range(kwidth)]
        fwd_out.append([r[0] for r in row])
        bwd_out.append([r[1] for r in row])
        h_out.append([r[2] for r in row])
        c_out.append([r[3] for r in row])
    fwd_pj, bwd_pj = np.array(fwd_out), np.array(bwd_out)  # [positions, kwidth, ...]
    h_new, c_new = np.array(h_out).mean(axis=0), np.array(c_out).mean(axis=0)
    bwd = np.zeros((width, *bwd_pj.shape[2:]))
    if routing == "official":
        for x in range(width):
            for j in range(kwidth):
                idx0 = x + j - 1
                if idx0 >= 0 and idx0 < width // stride and idx0 % stride == 0:
                    bwd[x] += bwd_pj[min(max(idx0, 0), width - 1) // stride, kwidth - 1 - j]
    else:
        for p, start in enumerate(starts):
            for j in range(kwidth):
                x = start + j - pad
                if 0 <= x < width:
                    bwd[x] += bwd_pj[p, j]
    return fwd_pj.mean(axis=1), bwd / kwidth, h_new, c_new


def conv2d(
    stride: int, routing: str, params: Params, fwd_msg: np.ndarray, bwd_msg: np.ndarray,
    h: np.ndarray, c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vsml_layers.conv2d: ``conv`` over the height whose base is ``conv`` over the width
    (conv1d) whose base is ``dense`` over channels. fwd_msg [H, W, in_c, m], bwd_msg
    [out_H, out_W, out_c, m], states [k, k, in_c, out_c, s]."""
    conv1d = functools.partial(conv, dense, stride, routing)
    return conv(conv1d, stride, routing, params, fwd_msg, bwd_msg, h, c)


def tick(
    params: Params,
    cfg: OracleConfig,
    layers: list[LayerState],
    error: np.ndarray,
    x: np.ndarray,
    reverse: bool,
) -> np.ndarray:
    """models.py, VSMLRNN._tick: one pass through the layers (bottom-up, or top-down when
    ``reverse``), updating ``layers`` in place; returns the last layer's bounded output.

    The input sits in slot 0 of the first layer's forward messages, the [n_out, 2] error
    (error, label) in slots 0-1 of the last layer's backward messages. Every layer runs
    ``micro_ticks`` steps on the messages it holds, then sends its new forward message up and
    its new backward message down; a layer that already ran in this pass keeps what it is sent
    for the next pass.
    """
    m = params["fwd_b"].shape[-1]
    if cfg.conv_layers:  # the image itself, not flattened (models.VSMLRNN._tick)
        x = x.reshape(cfg.input_shape)
    layers[0].incoming_fwd = pad_slots(x[..., None], m)
    layers[-1].incoming_bwd = pad_slots(error, m)
    order = range(len(layers) - 1, -1, -1) if reverse else range(len(layers))
    output = np.zeros(0)
    for i in order:
        ls = layers[i]
        fwd_msg, bwd_msg = ls.incoming_fwd, ls.incoming_bwd
        h, c = ls.h, ls.c
        layer_params = sub_rnn_params(params, cfg, i, reverse)
        for _ in range(cfg.micro_ticks):
            if i < len(cfg.conv_layers):
                stride = cfg.conv_layers[i][2]
                new_fwd, new_bwd, h, c = conv2d(stride, cfg.conv_routing, layer_params,
                                                fwd_msg, bwd_msg, h, c)
            else:
                new_fwd, new_bwd, h, c = dense(layer_params, fwd_msg, bwd_msg, h, c)
        ls.h, ls.c = h, c
        if i > 0:  # reshaped to what the receiver holds (conv: an image)
            layers[i - 1].incoming_bwd = new_bwd.reshape(layers[i - 1].incoming_bwd.shape)
        if i < len(layers) - 1:
            layers[i + 1].incoming_fwd = new_fwd.reshape(layers[i + 1].incoming_fwd.shape)
        else:
            output = np.tanh(new_fwd[:, OUTPUT_IDX] / cfg.output_bound) * cfg.output_bound
    return output


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def run_episode(
    params: Params,
    cfg: OracleConfig,
    xs: np.ndarray,
    ys: np.ndarray,
    initial: list[tuple[np.ndarray, np.ndarray]],
) -> Episode:
    """models.py, VSMLRNN.__call__ with batch size 1: predict x_t, then learn from y_t.

    ``initial`` holds each layer's (h, c), [n_in, n_out, s]. All messages start at zero. The
    error is the gradient of the cross-entropy with respect to the bounded logits,
    softmax - onehot, paired with the one-hot label when ``feed_label`` (else zeros). Without a
    backward pass it reaches the last layer with the next input; with one, a top-down pass
    delivers it at once and the next forward pass gets a zero error.
    """
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = params["fwd_b"].shape[-1]
    shapes = message_shapes(cfg, initial)
    layers = [
        LayerState(
            h=np.array(h, np.float64),
            c=np.array(c, np.float64),
            incoming_fwd=np.zeros((*fwd_shape, m)),
            incoming_bwd=np.zeros((*bwd_shape, m)),
        )
        for (h, c), (fwd_shape, bwd_shape) in zip(initial, shapes, strict=True)
    ]
    n_out = layers[-1].h.shape[1]
    error = np.zeros((n_out, 2))
    logits, losses = [], []
    for x, y in zip(np.asarray(xs, np.float64), np.asarray(ys), strict=True):
        out = tick(params, cfg, layers, error, x, reverse=False)
        onehot = np.eye(n_out)[int(y)]
        log_p = log_softmax(out)
        logits.append(out)
        losses.append(-log_p[int(y)])
        grad = np.exp(log_p) - onehot
        error = np.stack([grad, onehot if cfg.feed_label else np.zeros(n_out)], axis=-1)
        if cfg.backward_pass:
            tick(params, cfg, layers, error, x, reverse=True)
            error = np.zeros_like(error)
    return Episode(np.array(logits), np.array(losses), layers, error)


def conv_specs(cfg: OracleConfig) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """models.complete_specs for conv layers: ((in_h, in_w, in_c), (out_h, out_w, out_c)),
    out = ceil(in / stride)."""
    specs = []
    shape = tuple(cfg.input_shape)
    for channels, _, stride in cfg.conv_layers:
        out = (int(np.ceil(shape[0] / stride)), int(np.ceil(shape[1] / stride)), channels)
        specs.append((shape, out))
        shape = out
    return specs


def message_shapes(
    cfg: OracleConfig, initial: list[tuple[np.ndarray, np.ndarray]]
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """models.VSMLRNN._create_layer_state: the (incoming forward, incoming backward) message
    shapes of every layer without the message axis: images for conv, vectors for dense."""
    convs = conv_specs(cfg)
    return [convs[i] if i < len(convs) else ((h.shape[0],), (h.shape[1],))
            for i, (h, _) in enumerate(initial)]


def layer_sizes(cfg: OracleConfig, n_in: int, n_out: int) -> list[tuple[int, int]]:
    """models.complete_specs for dense layers: (in_size, out_size) of each layer (after the
    conv layers: the first dense layer's input is the last conv's flattened output)."""
    convs = conv_specs(cfg)
    if convs:
        n_in = math.prod(convs[-1][1])
    sizes = [n_in, *cfg.hidden_layers, n_out]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


def initial_cell_std(n_in: int) -> float:
    """Std of the random half of c before truncation: recurrent.CustomLSTM._initializer uses
    1/sqrt(shape[0]), and shape[0] of a dense layer's state is its input size."""
    return 1.0 / math.sqrt(n_in)


def truncated_std() -> float:
    """Std of a standard normal truncated at +-TRUNCATION (what haiku's TruncatedNormal draws
    before scaling)."""
    t = TRUNCATION
    pdf = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(t / math.sqrt(2))
    return math.sqrt(1 - 2 * t * pdf / mass)


def initial_states(
    rng: np.random.Generator, sizes: list[tuple[int, int]], s: int = STATE_SIZE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """recurrent.CustomLSTM.initial_vsml_state: h = 0; the first ``int(s * 0.5)`` dimensions of
    c truncated normal with std 1/sqrt(n_in), the rest 0 (the per-episode random "weights")."""
    states = []
    for n_in, n_out in sizes:
        k = int(s * INIT_RAND_PROPORTION)
        draw = rng.standard_normal((n_in, n_out, k))
        while np.any(bad := np.abs(draw) > TRUNCATION):
            draw[bad] = rng.standard_normal(int(bad.sum()))
        c = np.concatenate([draw * initial_cell_std(n_in), np.zeros((n_in, n_out, s - k))], -1)
        states.append((np.zeros((n_in, n_out, s)), c))
    return states


def initial_conv_states(
    rng: np.random.Generator, cfg: OracleConfig, s: int = STATE_SIZE
) -> list[tuple[np.ndarray, np.ndarray]]:
    """models.SubRNN.initial_state for ConvSpec: initial_vsml_state of shape (k, k, in_c,
    out_c); its std 1/sqrt(shape[0]) is 1/sqrt(kernel_size) (see ``initial_conv_std``)."""
    states = []
    for (_, kernel, _), ((_, _, in_c), (_, _, out_c)) in zip(cfg.conv_layers, conv_specs(cfg),
                                                             strict=True):
        shape = (kernel, kernel, in_c, out_c)
        k = int(s * INIT_RAND_PROPORTION)
        draw = rng.standard_normal((*shape, k))
        while np.any(bad := np.abs(draw) > TRUNCATION):
            draw[bad] = rng.standard_normal(int(bad.sum()))
        c = np.concatenate([draw * initial_conv_std(kernel), np.zeros((*shape, s - k))], -1)
        states.append((np.zeros((*shape, s)), c))
    return states


def initial_conv_std(kernel: int) -> float:
    """recurrent.CustomLSTM._initializer: 1/sqrt(shape[0]); a conv state's shape[0] is the
    kernel size (not its fan-in, k * k * in_channels)."""
    return 1.0 / math.sqrt(kernel)
