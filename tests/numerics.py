"""Tolerances that follow from the computation, not from one machine (docs/testing.md).

Two runs of the same math in float32 (a wide and a narrow network, the fused kernel and XLA,
the fast path and the oracle) agree only to rounding, and the rounding depends on the order in
which a machine sums: XLA:CPU picks vector widths and reduction trees per instruction set and
per shape. A tolerance picked on one machine can fail on the next. Instead:

* **Exactness is checked in float64.** Both sides run in float64 (``jax.enable_x64``; the
  NumPy oracle is float64 already) from the same float32 inputs, where rounding is 2^29 times
  smaller: a bug (a dropped mask, a swapped term) still moves results by 1e-4 or more, and the
  float64 bound below is about 1e-11.
* **Each float32 side is held to its float64 run** by the same error model at float32's unit
  roundoff, so the production dtype is checked too, on any machine.

The error model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., sec. 3.1):
a quantity accumulated from n rounded operations is within gamma_n ~ n*u of exact, relative to
the magnitudes summed. An episode's result is the end of a chain of ``updates`` dependent LSTM
updates (steps x micro ticks x layers x passes); each update rounds ``ops`` times: the gate
pre-activation (a dot product of 2m + s terms plus the bias), the cell and the read-out
(``CELL_OPS``), and the message means over a layer's widest fan (``widest`` terms). The
magnitudes are bounded by ``scale``, the largest absolute value among the float64 results
compared (cell states, logits, losses), and at least 1 (gates, h and tanh are within [-1, 1]).
The forget gate (sigmoid(f + 5) < 1) damps an error carried in a cell, so the model adds the
errors up along the chain and does not compound them:

    |x - x_ref| <= updates * ops * u * scale.

The observed float32 errors are 1-2 orders of magnitude below this figure (errors of
independent roundings partly cancel; docs/testing.md lists them), so it holds on any order of
summation, and float64's figure is still 1e-4 times below the smallest effect of a bug.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# VSML_ES_NUMERICS_LOG=FILE: every checked error and its bound appended to FILE (tab-separated:
# test, what, error, bound), for the table of margins in docs/testing.md.
LOG = os.environ.get("VSML_ES_NUMERICS_LOG")

U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff 2^-24
U64 = float(np.finfo(np.float64).eps) / 2  # 2^-53
STATE_SIZE = 16
MESSAGE_SIZE = 8
# One LSTM update besides its dot product: the gate offsets, four gate nonlinearities,
# c' = f*c + i*tanh(g), h' = o*tanh(c'), the messenger projection of h (s terms) and the
# bounded read-out 100*tanh(z/100) and log-softmax: counted generously.
CELL_OPS = 8 + STATE_SIZE


def ops_per_update(widest: int, state: int = STATE_SIZE, message: int = MESSAGE_SIZE) -> int:
    """Rounded operations that one LSTM update adds to the chain: its gate pre-activation
    (2m + s products and the bias), the cell and read-out, and a message mean over ``widest``
    terms (the largest n_in, n_out or receptive field of the network)."""
    return (2 * message + state + 1) + CELL_OPS + widest


def lstm_updates(steps: int, micro_ticks: int, layers: int, backward: bool) -> int:
    """Dependent LSTM updates in an episode: every step runs every layer's micro ticks, in the
    forward pass and (``backward``) again in the backward pass."""
    return steps * micro_ticks * layers * (2 if backward else 1)


def scale_of(arrays: Iterable[np.ndarray]) -> float:
    """The largest magnitude among the reference results, at least 1."""
    return max([1.0, *(float(np.max(np.abs(a), initial=0.0)) for a in arrays)])


def bound(u: float, updates: int, ops: int, scale: float) -> float:
    """The error model above: ``updates * ops * u * scale``."""
    return updates * ops * u * scale


def as_dtype(tree: Any, dtype: Any) -> Any:
    """Every floating array of ``tree`` as a jax array of ``dtype`` (the same float32 values,
    widened; call it under ``jax.enable_x64`` for float64), the others as they are."""
    def one(a: Any) -> Any:
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(one, tree)


def assert_within(actual: np.ndarray, desired: np.ndarray, tol: float, what: str = "") -> float:
    """max |actual - desired| <= tol (shapes equal); returns the error, for the records."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    err = float(np.max(np.abs(actual - desired), initial=0.0))
    if LOG:
        with open(LOG, "a") as f:
            test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
            f.write(f"{test}\t{what}\t{err:.3e}\t{tol:.3e}\n")
    assert np.isfinite(err) and err <= tol, (
        f"{what}: max |difference| {err:.3g} exceeds the derived bound {tol:.3g}")
    return err
