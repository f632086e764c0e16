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


class LayerState(NamedTuple):
    h: jax.Array  # [n_in, n_out, state_size]
    c: jax.Array  # [n_in, n_out, state_size]


def layer_sizes(model: ModelConfig, num_inputs: int, num_outputs: int) -> list[tuple[int, int]]:
    """(n_in, n_out) of every VSML layer, input to output."""
    sizes = [num_inputs, *model.hidden_layers, num_outputs]
    return list(zip(sizes[:-1], sizes[1:], strict=True))


LayerFn = Callable[..., tuple["LayerState", jax.Array, jax.Array]]


def init_params(key: jax.Array, model: ModelConfig) -> Params:
    """Shared LSTM and message projections: truncated normal, std 1/sqrt(fan_in); zero biases."""
    s, m = model.state_size, model.message_size
    fan_in = 2 * m + s
    k_lstm, k_fwd, k_bwd = jax.random.split(key, 3)

    def trunc(k: jax.Array, shape: tuple[int, ...], fan: int) -> jax.Array:
        return jax.random.truncated_normal(k, -2.0, 2.0, shape) / jnp.sqrt(fan)

    return {
        # Rows: [forward message (m); backward message (m); h (s)]. Columns: gates i, g, f, o.
        "lstm_w": trunc(k_lstm, (fan_in, 4 * s), fan_in),
        "lstm_b": jnp.zeros((4 * s,)),
        "fwd_w": trunc(k_fwd, (s, m), s),
        "fwd_b": jnp.zeros((m,)),
        "bwd_w": trunc(k_bwd, (s, m), s),
        "bwd_b": jnp.zeros((m,)),
    }


def num_params(model: ModelConfig) -> int:
    s, m = model.state_size, model.message_size
    return (2 * m + s) * 4 * s + 4 * s + 2 * (s * m + m)


def init_layer_states(
    key: jax.Array, model: ModelConfig, sizes: list[tuple[int, int]]
) -> list[LayerState]:
    """Per-episode start: h = 0; half of c random with std init_scale/sqrt(n_in) (the "weights")."""
    s = model.state_size
    states = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes)), sizes, strict=True):
        weights = jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out, s // 2))
        weights = weights * (model.init_scale / jnp.sqrt(n_in))
        c = jnp.concatenate([weights, jnp.zeros((n_in, n_out, s - s // 2))], axis=-1)
        states.append(LayerState(h=jnp.zeros((n_in, n_out, s)), c=c))
    return states


def lstm_cell(z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gates from pre-activations z = [i, g, f, o]; returns (h', c')."""
    i, g, f, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + FORGET_OFFSET) * c + jax.nn.sigmoid(i + INPUT_OFFSET) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def layer_ticks(
    params: Params, state: LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int
) -> tuple[LayerState, jax.Array, jax.Array]:
    """Run ``ticks`` LSTM steps of one layer with fixed incoming messages.

    fwd_in: [n_in, m] forward messages; bwd_in: [n_out, m] backward messages.
    Returns the new state, forward output [n_out, m] and backward output [n_in, m].
    """
    fast, fwd_out, bwd_out = fast_layer_ticks(params, to_fast(state), fwd_in, bwd_in, ticks)
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


def fast_layer_ticks(
    params: Params, state: LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int
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
    h_to_b, h_from_a = jnp.mean(h, axis=2).T, jnp.mean(h, axis=1).T  # [n_out, s], [n_in, s]
    fwd_out = jnp.matmul(h_to_b, params["fwd_w"], precision=PRECISION) + params["fwd_b"]
    bwd_out = jnp.matmul(h_from_a, params["bwd_w"], precision=PRECISION) + params["bwd_b"]
    return LayerState(h, c), fwd_out, bwd_out


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


def init_net_state(
    key: jax.Array, model: ModelConfig, sizes: list[tuple[int, int]]
) -> NetState:
    pending = [jnp.zeros((n_out, model.message_size)) for _, n_out in sizes]
    return NetState(init_layer_states(key, model, sizes), pending)


def net_to_fast(net: NetState) -> NetState:
    """The same network state with every layer in the fast layout (for ``fast_layer_ticks``)."""
    return NetState([to_fast(layer) for layer in net.layers], list(net.pending))


def learn_step(
    params: Params,
    net: NetState,
    x: jax.Array,
    label: jax.Array,
    model: ModelConfig,
    layer_fn: LayerFn = layer_ticks,
) -> tuple[NetState, jax.Array]:
    """Predict ``x``, then receive its label: one online learning step.

    Returns the new state and the bounded logits of the prediction made before the label was
    seen. ``layer_fn`` lets the reference formulation reuse this exact control flow.
    """
    m, ticks = model.message_size, model.micro_ticks
    num_layers = len(net.layers)
    layers = list(net.layers)
    pending = list(net.pending)
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
        layers[li], fwd, bwd_out = layer_fn(params, layers[li], fwd, pending[li], ticks)
        if not model.backward_pass and li > 0:
            pending[li - 1] = bwd_out  # with a backward pass, overwritten before it is read
    logits = bound_logits(fwd[:, PREDICTION_SLOT], model.output_bound)
    onehot = jax.nn.one_hot(label, logits.shape[0])
    error = jax.nn.softmax(logits) - onehot
    err_msg = error_messages(error, onehot, m, model.feed_label)
    if model.backward_pass:
        bwd = err_msg
        for li in reversed(range(num_layers)):
            layers[li], _, bwd = layer_fn(params, layers[li], fwd_inputs[li], bwd, ticks)
            if li > 0:
                pending[li - 1] = bwd  # read by layer li-1 now, and in the next forward pass
        # pending[-1] stays zeros: the last layer's forward pass never sees an error.
    else:
        pending[-1] = err_msg  # arrives with the next input
    return NetState(layers, pending), logits
