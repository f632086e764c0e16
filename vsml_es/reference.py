"""The straightforward VSML layer: one LSTM per connection, as the paper's public code does it.

Forward and backward messages are concatenated with h into each connection's LSTM input,
messages are projected per connection and only then averaged. Far more work than
``vsml.layer_ticks`` but obviously right: the layer-level check of the fast path in the tests
and the baseline in ``benchmarks/throughput.py``. It shares the cell and ``learn_step`` with
the fast path; whole episodes are checked against ``tests/oracle_vsml.py``, which shares
nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsml_es.vsml import PRECISION, LayerState, Params, layer_norm, lstm_cell


def connection_tick(
    params: Params, h: jax.Array, c: jax.Array, f_a: jax.Array, g_b: jax.Array
) -> tuple[jax.Array, jax.Array]:
    z = jnp.matmul(jnp.concatenate([f_a, g_b, h]), params["lstm_w"], precision=PRECISION)
    z = z + params["lstm_b"]
    return lstm_cell(z, c)


def layer_ticks_reference(
    params: Params, state: LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int,
    out_mask: jax.Array | None = None,
) -> tuple[LayerState, jax.Array, jax.Array]:
    over_b = jax.vmap(connection_tick, in_axes=(None, 0, 0, None, 0))  # one input a, all b
    over_ab = jax.vmap(over_b, in_axes=(None, 0, 0, 0, None))
    h, c = state
    for _ in range(ticks):
        h, c = over_ab(params, h, c, fwd_in, bwd_in)
    fwd_ab = jnp.matmul(h, params["fwd_w"], precision=PRECISION) + params["fwd_b"]  # per (a, b)
    bwd_ab = jnp.matmul(h, params["bwd_w"], precision=PRECISION) + params["bwd_b"]
    if "fwd_ln_scale" in params:  # model.layer_norm: each connection's message, then the mean
        fwd_ab = layer_norm(fwd_ab, params["fwd_ln_scale"], params["fwd_ln_offset"])
        bwd_ab = layer_norm(bwd_ab, params["bwd_ln_scale"], params["bwd_ln_offset"])
    if out_mask is not None:  # the backward message averages over the live outputs only
        bwd = jnp.sum(bwd_ab * out_mask[None, :, None], axis=1) / out_mask.sum()
        return LayerState(h, c), fwd_ab.mean(axis=0), bwd
    return LayerState(h, c), fwd_ab.mean(axis=0), bwd_ab.mean(axis=1)
