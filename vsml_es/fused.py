"""The optional fused kernel (``model.kernel: fused``): one dense VSML layer's micro ticks in
one C++ pass over its state (csrc/, built by ``pip install`` as ``vsml_es._fused``).

Why: at MNIST size XLA:CPU runs the K=16 recurrent matmul and the gate nonlinearities as
separate kernels, each well below the machine's roofline (README, "An honest roofline"). The
fused kernel keeps a block of 16 connections' h in registers through every micro tick, with
the matmul, the gates and the means over connections in the same pass.

It computes ``vsml.fast_layer_ticks`` (same inputs, same layout, same results to float32
rounding: tests/test_fused.py holds it to the pure-JAX path and the NumPy oracle). The
pure-JAX path stays the default and the reference. Forward only: ES never differentiates the
episode; differentiating it (training.method imitation/backprop) is refused with a message.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import vsml
from vsml_es.config import GRADIENT_METHODS
from vsml_es.errors import ConfigError
from vsml_es.pytree import Params

TARGET = "vsml_es_fused_layer_ticks"
# The kernel is compiled for this state size only (csrc/vsml_fused_dispatch.h).
STATE_SIZE = 16
KERNELS = ("jax", "fused")
NOT_BUILT = (
    "model.kernel is 'fused' but the fused kernel (the extension vsml_es._fused) is not built "
    "in this installation: pip builds it when a C++ compiler (g++ or clang++) and Python's "
    "headers are present, so install them (Debian/Ubuntu: apt-get install g++ python3-dev) "
    "and reinstall with pip install -e . ; or use model.kernel: jax (the default)."
)


def available() -> bool:
    """Whether the extension is built (it is optional: a machine without a compiler has none)."""
    return importlib.util.find_spec("vsml_es._fused") is not None


# The kernel's variants, best first (csrc/vsml_fused_dispatch.h).
ISAS = ("avx512", "avx2", "generic")
# Names one variant, for tests and CI that run each variant the machine has; unset or empty:
# the best this CPU runs.
ISA_ENV = "VSML_ES_FUSED_ISA"


def supported_isas() -> list[str]:
    """The variants this CPU can run, best first (generic runs everywhere)."""
    best = _module().cpu_isa()
    return list(ISAS[ISAS.index(best):])


def isa() -> str:
    """The instruction set the kernel runs with: the CPU's best, or the one VSML_ES_FUSED_ISA
    names; a name that is not a variant, or one this CPU cannot run, is a ConfigError."""
    check_isa_env()
    return _module().isa()


def check_isa_env() -> None:
    want = os.environ.get(ISA_ENV, "")
    if not want:
        return
    if want not in ISAS:
        raise ConfigError(f"{ISA_ENV}={want!r} is not a variant of the fused kernel; valid "
                          f"values: {', '.join(ISAS)} (or unset for the CPU's best).")
    runnable = supported_isas()
    if want not in runnable:
        raise ConfigError(f"{ISA_ENV}={want!r}, but this CPU cannot run it: it runs "
                          f"{', '.join(runnable)}. Unset {ISA_ENV} for the CPU's best.")


def check_config(config: Any) -> None:
    """``model.kernel: fused`` only where it can run: dense VSML layers of state size 16,
    evaluation without gradients, and the extension built here."""
    m, method = config.model, config.training.method
    if m.kernel not in KERNELS:
        raise ConfigError(f"Config key 'model.kernel' is '{m.kernel}'; valid values: "
                          f"{', '.join(KERNELS)}.")
    if m.kernel != "fused":
        return
    problems = []
    if m.conv_layers:
        problems.append("conv layers (model.conv_layers): the kernel runs dense layers only")
    if m.state_size != STATE_SIZE:
        problems.append(f"model.state_size {m.state_size}: the kernel is built for "
                        f"{STATE_SIZE} only")
    if method in GRADIENT_METHODS:
        problems.append(f"training.method {method}: it takes gradients through the episode, "
                        "and the kernel runs forward only")
    if problems:
        raise ConfigError("model.kernel 'fused' does not support " + "; ".join(problems)
                          + ". Use model.kernel: jax (the default) for this config.")
    if not available():
        raise ConfigError(NOT_BUILT)
    check_isa_env()


def _module() -> Any:
    if not available():
        raise ConfigError(NOT_BUILT)
    from vsml_es import _fused

    return _fused


@functools.cache
def _register() -> None:
    jax.ffi.register_ffi_target(TARGET, _module().layer_ticks_handler(), platform="cpu")


def _gate_scale_offset(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Per gate row (i, g, f, o): 0.5 for the gates taken as sigmoid(x) = 0.5 tanh(x / 2) +
    0.5, which the kernel then gets pre-halved (exact in binary floating point), and the fixed
    gate offsets of ``vsml.fast_cell``."""
    scale = np.concatenate([np.full(s, 0.5), np.ones(s), np.full(s, 0.5), np.full(s, 0.5)])
    offset = np.concatenate([np.full(s, vsml.INPUT_OFFSET), np.zeros(s),
                             np.full(s, vsml.FORGET_OFFSET), np.zeros(s)])
    return scale.astype(np.float32)[:, None], offset.astype(np.float32)[:, None]


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def _ticks(w: jax.Array, fwd: jax.Array, bwd: jax.Array, mask: jax.Array, h: jax.Array,
           c: jax.Array, ticks: int) -> tuple[jax.Array, ...]:
    _register()
    check_isa_env()  # at trace time: a wrong VSML_ES_FUSED_ISA stops before any work
    s, n_out, n_in = h.shape[-3:]
    out = jax.ShapeDtypeStruct
    call = jax.ffi.ffi_call(
        TARGET,
        (out(h.shape, jnp.float32), out(c.shape, jnp.float32), out((s, n_out), jnp.float32),
         out((s, n_in), jnp.float32)),
        vmap_method="broadcast_all",  # the kernel loops over the leading (member) axes
        input_output_aliases={4: 0, 5: 1},  # h and c in place
    )
    return tuple(call(w, fwd, bwd, mask, h, c, ticks=np.int64(ticks)))


@_ticks.defjvp
def _no_gradients(ticks: int, primals: Any, tangents: Any) -> Any:
    raise NotImplementedError(
        "model.kernel 'fused' runs forward only (ES evaluation): it has no gradients. Use "
        "model.kernel: jax to differentiate through VSML episodes (training.method "
        "imitation or backprop).")


def layer_ticks(
    params: Params, state: vsml.LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int,
    out_mask: jax.Array | None = None,
) -> tuple[vsml.LayerState, jax.Array, jax.Array]:
    """``vsml.fast_layer_ticks`` through the fused kernel (state in the fast layout)."""
    m = fwd_in.shape[-1]
    s, n_out, n_in = state.h.shape
    scale, offset = _gate_scale_offset(s)
    w = params["lstm_w"]
    w_f, w_g, w_h = w[:m], w[m : 2 * m], w[2 * m :]
    fwd = jnp.matmul(w_f.T, fwd_in.T, precision=vsml.PRECISION) * scale  # [4s, n_in]
    bwd = (jnp.matmul(w_g.T, bwd_in.T, precision=vsml.PRECISION) + params["lstm_b"][:, None]
           + offset) * scale  # [4s, n_out]
    mask = jnp.ones((n_out,), jnp.float32) if out_mask is None else out_mask
    h, c, sum_a, sum_b = _ticks(w_h.T * scale, fwd, bwd, mask.astype(jnp.float32),
                                state.h, state.c, ticks)
    if "fwd_ln_scale" in params:
        fwd_out, bwd_out = vsml._normed_messages(params, h, out_mask)
        return vsml.LayerState(h, c), fwd_out, bwd_out
    h_to_b = sum_a.T / n_in  # [n_out, s]: mean over inputs a
    h_from_a = sum_b.T / (n_out if out_mask is None else out_mask.sum())  # [n_in, s]
    fwd_out = jnp.matmul(h_to_b, params["fwd_w"], precision=vsml.PRECISION) + params["fwd_b"]
    bwd_out = jnp.matmul(h_from_a, params["bwd_w"], precision=vsml.PRECISION) + params["bwd_b"]
    return vsml.LayerState(h, c), fwd_out, bwd_out
