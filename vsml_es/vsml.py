"""The VSML network in pure JAX: every weight is a tiny LSTM with shared parameters.

A dense VSML layer with ``n_in`` inputs and ``n_out`` outputs keeps one LSTM state (h, c) per
connection (a, b). All connections of all layers share one parameter set (the meta-learned
learning algorithm); learning within an episode happens only through the states.

This module computes the factored fast path. ``W·[f_a; g_b; h_ab]`` is split into
``W_f·f_a + W_g·g_b + W_h·h_ab`` so the message terms cost O(n_in + n_out) instead of
O(n_in·n_out), and because the output messages are linear in h, ``mean_a(A·h_ab) = A·mean_a(h)``:
h is reduced first and projected once. ``vsml_es.reference`` keeps the straightforward
per-connection formulation as a test oracle and benchmark baseline.

Inside an episode the states live in a *fast layout* ``[state, n_out, n_in]`` (see
``to_fast``): the recurrent matmul becomes ``W_h^T [4s, s] @ h [s, connections]`` with the
connections contiguous, the four gates are contiguous row blocks, and the message terms
broadcast along whole rows. On XLA:CPU this is ~2.5x less work per connection tick than the
public ``[n_in, n_out, state]`` layout, whose gate fusions read the broadcast message terms
transposed (benchmarks/throughput.py measures it). Gates use sigmoid(x) = 0.5·tanh(x/2) + 0.5,
one cheap tanh instead of exp and a division.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import ModelConfig
from vsml_es.pytree import Params

# Fixed gate offsets: remember by default (forget gate near 1), write slowly (input gate near 0).
FORGET_OFFSET = 5.0
INPUT_OFFSET = -5.0
# Forward-message slot read as the prediction of an output unit.
PREDICTION_SLOT = 1
# Every matmul in full float32. JAX's default lets GPUs use TF32 (10-bit mantissa), which would
# put the fast path ~1e-3 off the float32 oracle; CPUs compute float32 either way (bit-identical).
PRECISION = jax.lax.Precision.HIGHEST
# Name prefix of the backward pass's own parameter set (model.separate_backward_lstm).
BACKWARD_PREFIX = "back_"
# model.clock_timescales: gate weights of the clock features, [timescales, 4 * state_size].
CLOCK_PARAM = "clock_w"
# haiku.LayerNorm's default epsilon (the official SubRNN's message LayerNorm).
LAYER_NORM_EPS = 1e-5


class LayerState(NamedTuple):
    h: jax.Array  # [n_in, n_out, state_size]
    c: jax.Array  # [n_in, n_out, state_size]


class ConvGeometry(NamedTuple):
    """Static shape of one conv VSML layer (official ``ConvSpec`` after ``complete_specs``)."""

    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    kernel: int
    stride: int

    @property
    def n_in(self) -> int:
        return self.in_h * self.in_w * self.in_c

    @property
    def n_out(self) -> int:
        return self.out_h * self.out_w * self.out_c


def conv_geometries(model: ModelConfig, input_shape: tuple[int, ...] | None) -> tuple[
        ConvGeometry, ...]:
    """Every conv layer's shape from the image shape (H, W, C): output ceil(size / stride)
    (official ``complete_specs``). Raises ValueError for inputs that are not images."""
    if not model.conv_layers:
        return ()
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(f"model.conv_layers needs image inputs (HEIGHT, WIDTH, CHANNELS); "
                         f"the task's examples have shape {input_shape}")
    h, w, c = input_shape
    geoms = []
    for conv in model.conv_layers:
        out_h, out_w = -(-h // conv.stride), -(-w // conv.stride)
        geoms.append(ConvGeometry(h, w, c, out_h, out_w, conv.channels, conv.kernel, conv.stride))
        h, w, c = out_h, out_w, conv.channels
    return tuple(geoms)


def layer_sizes(model: ModelConfig, num_inputs: int, num_outputs: int,
                convs: tuple[ConvGeometry, ...] = ()) -> list[tuple[int, int]]:
    """(n_in, n_out) of every VSML layer, input to output; a conv layer's sizes count its
    message positions (height x width x channels), as its messages are flattened between
    layers (the official ``reshape``)."""
    conv_sizes = [(g.n_in, g.n_out) for g in convs]
    sizes = [convs[-1].n_out if convs else num_inputs, *model.hidden_layers, num_outputs]
    return conv_sizes + list(zip(sizes[:-1], sizes[1:], strict=True))


LayerFn = Callable[..., tuple["LayerState", jax.Array, jax.Array]]


def _init_set(key: jax.Array, model: ModelConfig) -> Params:
    """One LSTM with its messengers: truncated normal, std 1/sqrt(fan_in); zero biases. With
    ``layer_norm`` also the two LayerNorms' scales (ones) and offsets (zeros), as haiku's
    LayerNorm starts (the official ``SubRNN``); they draw no random numbers, so the other
    arrays are the same draws with or without them."""
    s, m = model.state_size, model.message_size
    fan_in = 2 * m + s
    k_lstm, k_fwd, k_bwd = jax.random.split(key, 3)

    def trunc(k: jax.Array, shape: tuple[int, ...], fan: int) -> jax.Array:
        return jax.random.truncated_normal(k, -2.0, 2.0, shape) / jnp.sqrt(fan)

    params = {
        # Rows: [forward message (m); backward message (m); h (s)]. Columns: gates i, g, f, o.
        "lstm_w": trunc(k_lstm, (fan_in, 4 * s), fan_in),
        "lstm_b": jnp.zeros((4 * s,)),
        "fwd_w": trunc(k_fwd, (s, m), s),
        "fwd_b": jnp.zeros((m,)),
        "bwd_w": trunc(k_bwd, (s, m), s),
        "bwd_b": jnp.zeros((m,)),
    }
    if model.layer_norm:
        for name in ("fwd", "bwd"):
            params[f"{name}_ln_scale"] = jnp.ones((m,))
            params[f"{name}_ln_offset"] = jnp.zeros((m,))
    if model.clock_timescales:  # zeros: the clock changes nothing until meta-training uses it
        params[CLOCK_PARAM] = jnp.zeros((len(model.clock_timescales), 4 * s))
    return params


def num_layers(model: ModelConfig) -> int:
    """VSML layers: the conv ones, the hidden ones and the output layer."""
    return len(model.conv_layers) + len(model.hidden_layers) + 1


def init_params(key: jax.Array, model: ModelConfig) -> Params:
    """The meta-parameters, a flat dict of arrays.

    Default: one shared set (``_init_set``), drawn exactly as before these options existed.
    ``layerwise_lstms``: every array gets a leading axis over the VSML layers (each layer its
    own LSTM, drawn from its own key). ``separate_backward_lstm``: a second such set under the
    prefix ``back_``, run by the backward pass (official ``separate_backward_rnn``).
    """
    if not (model.layerwise_lstms or model.separate_backward_lstm):
        return _init_set(key, model)
    k_fwd, k_back = jax.random.split(key)
    sets = [("", k_fwd)] + ([(BACKWARD_PREFIX, k_back)] if model.separate_backward_lstm else [])
    params: Params = {}
    for prefix, k in sets:
        if model.layerwise_lstms:
            per_layer = [_init_set(jax.random.fold_in(k, li), model)
                         for li in range(num_layers(model))]
            one = {name: jnp.stack([p[name] for p in per_layer]) for name in per_layer[0]}
        else:
            one = _init_set(k, model)
        params.update({prefix + name: value for name, value in one.items()})
    return params


def num_params(model: ModelConfig) -> int:
    s, m = model.state_size, model.message_size
    one = (2 * m + s) * 4 * s + 4 * s + 2 * (s * m + m) + (4 * m if model.layer_norm else 0)
    one += len(model.clock_timescales) * 4 * s
    one *= num_layers(model) if model.layerwise_lstms else 1
    return one * (2 if model.separate_backward_lstm else 1)


def layer_params(params: Params, model: ModelConfig, layer: int, backward: bool) -> Params:
    """The parameter set that runs VSML layer ``layer`` in a forward (or backward) pass: the
    shared set, that layer's slice (``layerwise_lstms``), from the backward set
    (``separate_backward_lstm``, backward passes only)."""
    if not (model.layerwise_lstms or model.separate_backward_lstm):
        return params
    prefix = BACKWARD_PREFIX if backward and model.separate_backward_lstm else ""
    own = {name[len(prefix):]: value for name, value in params.items()
           if name.startswith(prefix) and (prefix or not name.startswith(BACKWARD_PREFIX))}
    if model.layerwise_lstms:
        own = {name: value[layer] for name, value in own.items()}
    return own


def init_layer_states(
    key: jax.Array, model: ModelConfig, sizes: list[tuple[int, int]],
    convs: tuple[ConvGeometry, ...] = (),
) -> list[LayerState]:
    """Per-episode start: h = 0; half of c random with std init_scale/sqrt(n_in) (the "weights").
    A conv layer's state is [kernel, kernel, in_c, out_c, s] (one per kernel connection) with
    std init_scale/sqrt(kernel): the official initializer divides by sqrt(shape[0]), which for
    a conv state is the kernel size, not the fan-in."""
    s = model.state_size
    states = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes)), sizes, strict=True):
        if len(states) < len(convs):
            states.append(_init_conv_state(k, model, convs[len(states)]))
            continue
        weights = jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out, s // 2))
        weights = weights * (model.init_scale / jnp.sqrt(n_in))
        c = jnp.concatenate([weights, jnp.zeros((n_in, n_out, s - s // 2))], axis=-1)
        states.append(LayerState(h=jnp.zeros((n_in, n_out, s)), c=c))
    return states


def _init_conv_state(key: jax.Array, model: ModelConfig, g: ConvGeometry) -> LayerState:
    s = model.state_size
    shape = (g.kernel, g.kernel, g.in_c, g.out_c)
    weights = jax.random.truncated_normal(key, -2.0, 2.0, (*shape, s // 2))
    weights = weights * (model.init_scale / jnp.sqrt(g.kernel))
    c = jnp.concatenate([weights, jnp.zeros((*shape, s - s // 2))], axis=-1)
    return LayerState(h=jnp.zeros((*shape, s)), c=c)


def lstm_cell(z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gates from pre-activations z = [i, g, f, o]; returns (h', c')."""
    i, g, f, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + FORGET_OFFSET) * c + jax.nn.sigmoid(i + INPUT_OFFSET) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def layer_ticks(
    params: Params, state: LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int,
    out_mask: jax.Array | None = None,
) -> tuple[LayerState, jax.Array, jax.Array]:
    """Run ``ticks`` LSTM steps of one layer with fixed incoming messages.

    fwd_in: [n_in, m] forward messages; bwd_in: [n_out, m] backward messages.
    Returns the new state, forward output [n_out, m] and backward output [n_in, m].
    ``out_mask`` ([n_out], 1 = live output): the backward output averages over live outputs
    only (the last layer of a network wider than its episode's dataset).
    """
    fast, fwd_out, bwd_out = fast_layer_ticks(params, to_fast(state), fwd_in, bwd_in, ticks,
                                              out_mask)
    return from_fast(fast), fwd_out, bwd_out


def to_fast(state: LayerState) -> LayerState:
    """Public layout [n_in, n_out, s] -> fast layout [s, n_out, n_in]."""
    return LayerState(*(jnp.transpose(a, (2, 1, 0)) for a in state))


def from_fast(state: LayerState) -> LayerState:
    """Fast layout [s, n_out, n_in] -> public layout [n_in, n_out, s]."""
    return LayerState(*(jnp.transpose(a, (2, 1, 0)) for a in state))


def _sigmoid(x: jax.Array) -> jax.Array:
    # Exact identity; XLA lowers sigmoid as 1 / (1 + exp(-x)), which costs an exp and a divide.
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def fast_cell(z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``lstm_cell`` on the fast layout: z [4s, ...] holds the gates i, g, f, o as row blocks."""
    s = c.shape[0]
    i, g, f, o = z[:s], z[s : 2 * s], z[2 * s : 3 * s], z[3 * s :]
    c = _sigmoid(f + FORGET_OFFSET) * c + _sigmoid(i + INPUT_OFFSET) * jnp.tanh(g)
    return _sigmoid(o) * jnp.tanh(c), c


def layer_norm(x: jax.Array, scale: jax.Array, offset: jax.Array) -> jax.Array:
    """LayerNorm over the last axis, as haiku's (biased variance, eps inside the root)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * (scale * jax.lax.rsqrt(var + LAYER_NORM_EPS)) + offset


def fast_layer_ticks(
    params: Params, state: LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int,
    out_mask: jax.Array | None = None,
) -> tuple[LayerState, jax.Array, jax.Array]:
    """``layer_ticks`` on a state in the fast layout [s, n_out, n_in] (same math)."""
    m = fwd_in.shape[-1]
    w = params["lstm_w"]
    w_f, w_g, w_h = w[:m], w[m : 2 * m], w[2 * m :]
    from_fwd = jnp.matmul(w_f.T, fwd_in.T, precision=PRECISION)  # [4s, n_in]
    from_bwd = jnp.matmul(w_g.T, bwd_in.T, precision=PRECISION) + params["lstm_b"][:, None]
    w_ht = w_h.T  # [4s, s]

    def tick(_: int, hc: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        h, c = hc
        # Each message term is added to the loop-variant product on its own, so XLA broadcasts
        # it inside the gate fusion instead of hoisting a [4s, n_out, n_in] sum out of the loop.
        z = (jnp.einsum("ks,sba->kba", w_ht, h, precision=PRECISION)
             + from_fwd[:, None, :] + from_bwd[:, :, None])
        return fast_cell(z, c)

    # A loop, not Python unrolling: XLA:CPU would otherwise fuse the matmul's flattening
    # reshape into the gate fusion that produces h, and that fusion no longer vectorizes.
    h, c = jax.lax.fori_loop(0, ticks, tick, tuple(state))
    if "fwd_ln_scale" in params:
        fwd_out, bwd_out = _normed_messages(params, h, out_mask)
        return LayerState(h, c), fwd_out, bwd_out
    h_to_b, h_from_a = jnp.mean(h, axis=2).T, jnp.mean(h, axis=1).T  # [n_out, s], [n_in, s]
    if out_mask is not None:  # mean over the live outputs b only
        h_from_a = jnp.einsum("sba,b->as", h, out_mask, precision=PRECISION) / out_mask.sum()
    fwd_out = jnp.matmul(h_to_b, params["fwd_w"], precision=PRECISION) + params["fwd_b"]
    bwd_out = jnp.matmul(h_from_a, params["bwd_w"], precision=PRECISION) + params["bwd_b"]
    return LayerState(h, c), fwd_out, bwd_out


def _normed_messages(
    params: Params, h: jax.Array, out_mask: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Messages with LayerNorm: the official SubRNN normalizes each connection's projected
    message before the layer averages them, so here (unlike without LayerNorm) the messages
    are projected per connection, [n_out, n_in, m], and only then averaged."""
    fwd_ab = params["fwd_b"] + jnp.einsum("sba,sm->bam", h, params["fwd_w"], precision=PRECISION)
    bwd_ab = params["bwd_b"] + jnp.einsum("sba,sm->bam", h, params["bwd_w"], precision=PRECISION)
    fwd_ab = layer_norm(fwd_ab, params["fwd_ln_scale"], params["fwd_ln_offset"])
    bwd_ab = layer_norm(bwd_ab, params["bwd_ln_scale"], params["bwd_ln_offset"])
    if out_mask is None:
        return jnp.mean(fwd_ab, axis=1), jnp.mean(bwd_ab, axis=0)
    bwd = jnp.einsum("bam,b->am", bwd_ab, out_mask, precision=PRECISION) / out_mask.sum()
    return jnp.mean(fwd_ab, axis=1), bwd


def _forward_routing(size: int, n_out: int, kernel: int, stride: int) -> np.ndarray:
    """[n_out, kernel, size] 0/1: output position p's kernel slot j reads input position
    p * stride + j - kernel // 2 (official: the messages zero-padded by kernel // 2, then
    gathered at p * stride + j); slots beyond the border read nothing (a zero message)."""
    route = np.zeros((n_out, kernel, size), np.float32)
    for p in range(n_out):
        for j in range(kernel):
            x = p * stride + j - kernel // 2
            if 0 <= x < size:
                route[p, j, x] = 1.0
    return route


def _backward_routing(size: int, n_out: int, kernel: int, stride: int, mode: str) -> np.ndarray:
    """[size, n_out, kernel] 0/1: which (output position, kernel slot) backward messages input
    position x sums (the layer then divides by kernel per axis: a mean over slots in which
    empty slots count as zeros).

    official (vsml_layers.conv): x's slot j reads output clip(idx0, 0, size - 1) // stride at
    kernel slot kernel - 1 - j, idx0 = x + j - 1, where idx0 >= 0, idx0 < size // stride and
    idx0 % stride == 0. The offset 1 is kernel // 2 only for kernel 3, and ``idx0 < size //
    stride`` drops every output p >= size / stride**2 at strides above 1 (the paper's configs
    use kernel 3; stride 2 reaches a conv layer below only in array/conv.yaml's 3-conv).
    full: the transpose of ``_forward_routing``, every output position with offset
    kernel // 2.
    """
    if mode != "official":
        return np.transpose(_forward_routing(size, n_out, kernel, stride), (2, 0, 1))
    route = np.zeros((size, n_out, kernel), np.float32)
    for x in range(size):
        for j in range(kernel):
            idx0 = x + j - 1
            if 0 <= idx0 < size // stride and idx0 % stride == 0:
                route[x, min(idx0, size - 1) // stride, kernel - 1 - j] += 1.0
    return route


def conv_layer_ticks(
    params: Params, state: LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int,
    geom: ConvGeometry, backward: str = "official",
) -> tuple[LayerState, jax.Array, jax.Array]:
    """``ticks`` LSTM steps of a conv VSML layer (official ``vsml_layers.conv2d``).

    State [k, k, in_c, out_c, s]: one LSTM per kernel connection, shared by all positions
    like a conv weight. Each tick every output position p runs every kernel connection on
    the forward message under it (zero beyond the border: SAME padding of k // 2) and on
    p's backward message; the connection's new state is the mean over positions of those
    steps (the official code reduces the vmapped states with the layer's reduce_fn, mean).
    fwd_in [in_h*in_w*in_c, m] and bwd_in [out_h*out_w*out_c, m] are row-major flattened
    images. Forward output: at each p and out channel, the mean over kernel positions and in
    channels; backward output: the mean over out channels, routed back to input positions
    (``_backward_routing``) and divided by k*k. Routing is by 0/1 matrices (two small
    matmuls), which XLA compiles far faster than gathers.
    """
    g, m = geom, fwd_in.shape[-1]
    k, s = g.kernel, state.h.shape[-1]
    w_f, w_g, w_h = jnp.split(params["lstm_w"], [m, 2 * m])  # rows: forward, backward, h
    # W_f·f per input position, then routed: a zero-padded message gives W_f·0 = 0.
    x_f = jnp.matmul(fwd_in, w_f, precision=PRECISION).reshape(g.in_h, g.in_w, g.in_c, 4 * s)
    fwd_h = _forward_routing(g.in_h, g.out_h, k, g.stride)
    fwd_w = _forward_routing(g.in_w, g.out_w, k, g.stride)
    from_fwd = jnp.einsum("pja,qlb,abif->pqjlif", fwd_h, fwd_w, x_f,
                          precision=PRECISION)  # [oh, ow, k, k, ic, 4s]
    from_bwd = jnp.matmul(bwd_in, w_g, precision=PRECISION) + params["lstm_b"]
    from_bwd = from_bwd.reshape(g.out_h, g.out_w, g.out_c, 4 * s)
    h, c = state
    h_p = h[None, None]
    for _ in range(ticks):  # micro ticks: the official loop calls conv2d once per tick
        z = (jnp.matmul(h, w_h, precision=PRECISION)[None, None]
             + from_fwd[:, :, :, :, :, None, :] + from_bwd[:, :, None, None, None, :, :])
        h_p, c_p = lstm_cell(z, c[None, None])  # [oh, ow, k, k, ic, oc, s]
        h, c = jnp.mean(h_p, axis=(0, 1)), jnp.mean(c_p, axis=(0, 1))
    if "fwd_ln_scale" in params:  # per connection and position, normalized, then averaged
        fwd_conn = params["fwd_b"] + jnp.matmul(h_p, params["fwd_w"], precision=PRECISION)
        bwd_conn = params["bwd_b"] + jnp.matmul(h_p, params["bwd_w"], precision=PRECISION)
        fwd = jnp.mean(layer_norm(fwd_conn, params["fwd_ln_scale"], params["fwd_ln_offset"]),
                       axis=(2, 3, 4))
        gb = jnp.mean(layer_norm(bwd_conn, params["bwd_ln_scale"], params["bwd_ln_offset"]),
                      axis=5)
    else:  # messages are linear in h: reduce h first
        fwd = params["fwd_b"] + jnp.matmul(jnp.mean(h_p, axis=(2, 3, 4)), params["fwd_w"],
                                           precision=PRECISION)  # [oh, ow, oc, m]
        gb = params["bwd_b"] + jnp.matmul(jnp.mean(h_p, axis=5), params["bwd_w"],
                                          precision=PRECISION)  # [oh, ow, k, k, ic, m]
    bwd_h = _backward_routing(g.in_h, g.out_h, k, g.stride, backward)
    bwd_w = _backward_routing(g.in_w, g.out_w, k, g.stride, backward)
    bwd = jnp.einsum("apj,bql,pqjlim->abim", bwd_h, bwd_w, gb, precision=PRECISION) / (k * k)
    return LayerState(h, c), fwd.reshape(g.n_out, m), bwd.reshape(g.n_in, m)


def input_messages(x: jax.Array, message_size: int) -> jax.Array:
    """First layer's forward messages: the feature in slot 0, zeros elsewhere."""
    return jnp.zeros((x.shape[0], message_size)).at[:, 0].set(x)


def error_messages(
    error: jax.Array, label_onehot: jax.Array, message_size: int, feed_label: bool
) -> jax.Array:
    """Last layer's backward messages: the error in slot 0, optionally the label in slot 1."""
    msg = jnp.zeros((error.shape[0], message_size)).at[:, 0].set(error)
    if feed_label:
        msg = msg.at[:, 1].set(label_onehot)
    return msg


def bound_logits(raw: jax.Array, bound: float) -> jax.Array:
    return bound * jnp.tanh(raw / bound)


class NetState(NamedTuple):
    """Everything that changes during an episode: per-layer LSTM states and pending messages.

    ``pending[l]`` is layer l's backward input for its next forward pass: the backward output of
    layer l+1 from the last pass that ran it (the previous forward pass, or with an explicit
    backward pass the previous backward pass); for the last layer the error of the previous
    example, or zeros with an explicit backward pass (which consumed that error).
    """

    layers: list[LayerState]
    pending: list[jax.Array]
    step: jax.Array | None = None  # int32 steps taken (model.clock_timescales), else None


def clock_features(step: jax.Array, timescales: tuple[float, ...]) -> jax.Array:
    """[len(timescales)]: tanh(t / tau), each rising from 0 to ~1 over its own timescale."""
    return jnp.tanh(step.astype(jnp.float32) / jnp.asarray(timescales, jnp.float32))


def with_clock(params: Params, step: jax.Array, timescales: tuple[float, ...]) -> Params:
    """The parameters with the clock folded into every LSTM's gate bias (also a layerwise or
    backward set's), so every layer formulation (pure, fused, oracle, conv) runs it unchanged."""
    features = clock_features(step, timescales)
    out = dict(params)
    for name, weights in params.items():
        if name.endswith(CLOCK_PARAM):
            bias = name[: -len(CLOCK_PARAM)] + "lstm_b"
            out[bias] = params[bias] + jnp.einsum("k,...kg->...g", features, weights,
                                                  precision=PRECISION)
    return out


def init_net_state(
    key: jax.Array, model: ModelConfig, sizes: list[tuple[int, int]],
    convs: tuple[ConvGeometry, ...] = (),
) -> NetState:
    pending = [jnp.zeros((n_out, model.message_size)) for _, n_out in sizes]
    step = jnp.zeros((), jnp.int32) if model.clock_timescales else None
    return NetState(init_layer_states(key, model, sizes, convs), pending, step)


def net_to_fast(net: NetState, num_conv: int = 0) -> NetState:
    """The same network state with every dense layer in the fast layout (for
    ``fast_layer_ticks``); the first ``num_conv`` (conv) layers keep theirs."""
    layers = [layer if li < num_conv else to_fast(layer) for li, layer in enumerate(net.layers)]
    return NetState(layers, list(net.pending), net.step)


def output_mask(live: jax.Array, num_outputs: int) -> jax.Array:
    """[num_outputs] float: 1 for the first ``live`` outputs (the episode dataset's classes)."""
    return (jnp.arange(num_outputs) < live).astype(jnp.float32)


def masked_softmax(logits: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax over the live outputs only; dead outputs get probability 0."""
    if mask is None:
        return jax.nn.softmax(logits)
    return jax.nn.softmax(jnp.where(mask > 0, logits, -jnp.inf))


def learn_step(
    params: Params,
    net: NetState,
    x: jax.Array,
    label: jax.Array,
    model: ModelConfig,
    layer_fn: LayerFn = layer_ticks,
    live: jax.Array | None = None,
    convs: tuple[ConvGeometry, ...] = (),
) -> tuple[NetState, jax.Array]:
    """Predict ``x``, then receive its label: one online learning step.

    Returns the new state and the bounded logits of the prediction made before the label was
    seen. ``layer_fn`` lets the reference formulation reuse this exact control flow.
    ``live`` (a traced count, or None for all): only the first ``live`` outputs belong to this
    episode's dataset. The others are masked out of the softmax and the error, and the last
    layer's backward message averages over the live outputs only, so the live outputs, all
    hidden layers and the returned live logits evolve exactly as in a network ``live`` wide.
    ``convs``: the shapes of the first len(convs) layers, which are conv layers
    (``conv_layer_ticks``; ``x`` is then the row-major flattened image).
    """
    m, ticks = model.message_size, model.micro_ticks
    if net.step is not None:
        params = with_clock(params, net.step, model.clock_timescales)
    num_layers = len(net.layers)
    layers = list(net.layers)
    pending = list(net.pending)
    n_out = pending[-1].shape[0]
    mask = None if live is None else output_mask(live, n_out)

    def run(li: int, backward: bool, fwd_in: jax.Array,
            bwd_in: jax.Array) -> tuple[LayerState, jax.Array, jax.Array]:
        own = layer_params(params, model, li, backward)
        if li < len(convs):
            return conv_layer_ticks(own, layers[li], fwd_in, bwd_in, ticks, convs[li],
                                    model.conv_backward)
        if mask is not None and li == num_layers - 1:
            return layer_fn(own, layers[li], fwd_in, bwd_in, ticks, out_mask=mask)
        return layer_fn(own, layers[li], fwd_in, bwd_in, ticks)

    # Message routing as in the official code (louiskirsch/vsml-neurips2021, models.py,
    # VSMLRNN._tick and VSMLRNN.__call__'s scan_tick): every layer keeps the last backward
    # message sent to it. In the forward pass layer l runs before layer l+1, so a hidden layer
    # sees what layer l+1 sent in the previous pass: the previous backward pass when there is
    # one. The last layer sees the previous example's error, or zeros after a backward pass
    # (scan_tick zeroes the error once the backward pass has used it).
    fwd = input_messages(x, m)
    fwd_inputs = []
    for li in range(num_layers):
        fwd_inputs.append(fwd)
        layers[li], fwd, bwd_out = run(li, False, fwd, pending[li])
        if not model.backward_pass and li > 0:
            pending[li - 1] = bwd_out  # with a backward pass, overwritten before it is read
    logits = bound_logits(fwd[:, PREDICTION_SLOT], model.output_bound)
    onehot = jax.nn.one_hot(label, logits.shape[0])
    error = masked_softmax(logits, mask) - onehot
    err_msg = error_messages(error, onehot, m, model.feed_label)
    if model.backward_pass:
        bwd = err_msg
        for li in reversed(range(num_layers)):
            layers[li], _, bwd = run(li, True, fwd_inputs[li], bwd)
            if li > 0:
                pending[li - 1] = bwd  # read by layer li-1 now, and in the next forward pass
        # pending[-1] stays zeros: the last layer's forward pass never sees an error.
    else:
        pending[-1] = err_msg  # arrives with the next input
    step = None if net.step is None else net.step + 1
    return NetState(layers, pending, step), logits
