"""Split the CPU into several XLA host devices before JAX starts, so chunks run in parallel.

``evaluator.evaluate_members`` runs one fixed-size chunk of members per local device at once,
and the results do not depend on the device count (every device runs the same single-chunk
computation). XLA:CPU spreads a single device's work over the cores only partly (≈1.4 of 2
cores busy); with one host device per core the digits evaluator ran 1.2-1.8x faster on 2
cores (benchmarks/throughput.py --ablations). On a machine already crowded with other
multi-threaded work it was slower (0.5-0.8x): set ``VSML_ES_CPU_DEVICES=1`` there. Any other
number sets the count; the default ``auto`` takes one per CPU this process may use.

On CPUs with AVX-512 it also asks XLA for 512-bit vectors (LLVM picks 256 by default): the
VSML gate fusions are long elementwise chains over contiguous connections. In three
interleaved runs of ``python benchmarks/throughput.py --quick --repeats 6 --no-reference``
the evaluator did 18.7-25.5 M connection ticks/s against 17.4-18.4 M with
``XLA_FLAGS=--xla_cpu_prefer_vector_width=256`` (noisy shared machine; fitness bit-identical,
benchmarks/trajectory.py). GPUs ignore it.

It only takes effect if it runs before JAX initializes its CPU backend; ``import vsml_es``
calls it. Flags already in ``XLA_FLAGS`` (device count, vector width) are left alone.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping

ENV_VAR = "VSML_ES_CPU_DEVICES"
XLA_FLAG = "--xla_force_host_platform_device_count"
VECTOR_FLAG = "--xla_cpu_prefer_vector_width"
# XLA:CPU sizes its intra-op (Eigen) thread pool from this variable, else from the cores this
# process may use; the pool never has fewer threads than host devices.
THREADS_VAR = "NPROC"


def _jax_backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


def requested_count(environ: MutableMapping[str, str]) -> int:
    """Host devices wanted: ``VSML_ES_CPU_DEVICES``, or one per CPU this process may use."""
    value = environ.get(ENV_VAR, "auto").strip().lower()
    if value in ("", "auto"):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1
        )
    try:
        count = int(value)
    except ValueError:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not a number; use a positive integer (1 keeps a single "
            "CPU device) or 'auto', the default (one per available core)."
        ) from None
    if count < 1:
        raise ValueError(f"{ENV_VAR} must be at least 1, got {count}.")
    return count


def has_avx512(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    return any(line.startswith("flags") and " avx512f" in line for line in cpuinfo.splitlines())


def configure(environ: MutableMapping[str, str] | None = None) -> int | None:
    """Add the host device count (and the vector width) to ``XLA_FLAGS``; returns the count,
    or None where it was not set."""
    environ = os.environ if environ is None else environ
    if _jax_backend_started():
        return None
    flags = environ.get("XLA_FLAGS", "")
    if VECTOR_FLAG not in flags and has_avx512():
        flags = f"{flags} {VECTOR_FLAG}=512".strip()
        environ["XLA_FLAGS"] = flags
    if XLA_FLAG in flags:
        return None
    count = requested_count(environ)
    if count > 1:
        environ["XLA_FLAGS"] = f"{flags} {XLA_FLAG}={count}".strip()
    return count


def share_environment(cores: int,
                      environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a process that gets ``cores`` of this machine's cores (a Ray worker
    beside others on one machine): that many host devices and XLA threads, other flags kept.

    Without it every worker sizes its XLA thread pool to the whole machine and N workers run N
    threads per core. Fitness does not change: each chunk runs the same computation whatever
    the device count, and the thread count does not enter the VSML kernels' arithmetic
    (tests/test_speed.py compares the bits).
    """
    environ = os.environ if environ is None else environ
    flags = re.sub(rf"{XLA_FLAG}=\S+", "", environ.get("XLA_FLAGS", "")).split()
    if cores > 1:
        flags.append(f"{XLA_FLAG}={cores}")
    return {"XLA_FLAGS": " ".join(flags), ENV_VAR: str(cores), THREADS_VAR: str(cores)}
