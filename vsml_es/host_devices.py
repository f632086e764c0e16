"""Optionally split the CPU into several XLA host devices before JAX starts.

``evaluator.evaluate_members`` runs one fixed-size chunk of members per local device at once,
and the results do not depend on the device count (every device runs the same single-chunk
computation). On GPUs that spreads the population over the cards. On a CPU it is opt-in:
XLA:CPU (jax 0.10) already spreads one device's fusions and matmuls over all cores, and on a
2-core machine shared with other work two host devices were slower than one (0.5-0.8x,
benchmarks/throughput.py --ablations). Set ``VSML_ES_CPU_DEVICES`` to a number, or to
``auto`` for one per available core, to try it on a larger machine.

It only takes effect if it runs before JAX initializes its CPU backend; ``import vsml_es``
calls it. An ``--xla_force_host_platform_device_count`` already in ``XLA_FLAGS`` is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

ENV_VAR = "VSML_ES_CPU_DEVICES"
XLA_FLAG = "--xla_force_host_platform_device_count"


def _jax_backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def requested_count(environ: MutableMapping[str, str]) -> int:
    """Host devices wanted: ``VSML_ES_CPU_DEVICES`` (default 1; ``auto``: one per CPU)."""
    value = environ.get(ENV_VAR, "1").strip().lower()
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1
        )
    try:
        count = int(value)
    except ValueError:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not a number; use a positive integer (1, the default, "
            "keeps one CPU device) or 'auto' (one per available core)."
        ) from None
    if count < 1:
        raise ValueError(f"{ENV_VAR} must be at least 1, got {count}.")
    return count


def configure(environ: MutableMapping[str, str] | None = None) -> int | None:
    """Add the host device count to ``XLA_FLAGS``; returns it, or None where nothing was set."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if XLA_FLAG in flags or _jax_backend_started():
        return None
    count = requested_count(environ)
    if count > 1:
        environ["XLA_FLAGS"] = f"{flags} {XLA_FLAG}={count}".strip()
    return count
