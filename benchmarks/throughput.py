"""Connection-ticks per second of the VSML population evaluator, the straightforward
implementation and this machine's roofline, all measured in one run on the same machine.

A connection tick is one LSTM step of one connection (a, b). One evaluation of P members on
episodes of T steps is P·T·Σ(n_in·n_out)·micro_ticks·(2 with the backward pass) of them.

Rows (per size):
  ours         the project's evaluator (``evaluator.evaluate_members``): fast layout, one chunk of
               members per local device
  ours (fused) the same with ``model.kernel: fused`` (the optional C++ kernel of
               vsml_es/fused.py), where it is built
  reference    ``vsml_es.reference``: one LSTM per connection (nested vmap), messages
               concatenated into each LSTM input and projected per connection, then averaged;
               all members in one jit on one device
  ablations    (--ablations) ours on one device; the factored math in the public layout with
               jax.nn.sigmoid (the fast path before the speed work)
  limits       (--limits) the two XLA building blocks alone on one device: the batched K=16
               recurrent matmul and the gates (5 transcendentals per state element)
The roofline row: a large jitted f32 matmul (FLOP/s), a large copy (bytes read + written per
second) and tanh on data in cache (elements/s), each on all local devices; a connection tick
needs ≈2.3 kFLOP, 256 B of state traffic and 80 transcendentals (per state unit: three sigmoid
gates written as tanh, tanh(g), tanh(c)). Matmul and tanh share the cores' vector units, so
their times add; memory traffic may overlap them: limit = 1 / max(B/bandwidth, FLOP/matmul
rate + 80/tanh rate). The matmul-and-copy-only limit of earlier versions is printed beside it.

Compile time is excluded from the rates (first call minus the best later call) and printed
apart. Rates are the best of ``--repeats`` calls: on a shared machine the best call is the one
least disturbed by other work. Compare rows of one run only.

    python benchmarks/throughput.py            # full table (several minutes on 2 cores)
    python benchmarks/throughput.py --quick    # digits size only, short episodes (< 1 min)
    python benchmarks/throughput.py --memory   # peak memory of an evaluation, T=2000 vs T=100
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Importing vsml_es splits the CPU into host devices; JAX's backend starts later, at first use.
from vsml_es import fused, reference, vsml
from vsml_es.config import ModelConfig, TrainingConfig
from vsml_es.data import ArrayDataset
from vsml_es.episodes import learner_episode, population_fitness_on
from vsml_es.evaluator import EvalSpec, evaluate_members, replicated
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.tasks import Task, TaskData, load_task, make_task

BYTES_PER_TICK = 4 * 16 * 4  # h and c read and written, 16 floats each
TANH_PER_TICK = 5 * 16  # sigmoid(f), sigmoid(i), sigmoid(o) as tanh, tanh(g), tanh(c)


def tick_limit(model: ModelConfig, flops: float, bandwidth: float, tanh: float) -> float:
    """Connection ticks/s at best: compute (matmul, then tanh) in series, memory overlapped."""
    compute_s = flop_per_tick(model) / flops + TANH_PER_TICK * model.state_size / 16 / tanh
    return 1 / max(BYTES_PER_TICK / bandwidth, compute_s)


def flop_per_tick(model: ModelConfig) -> int:
    """W_h·h (2·s·4s), the two message terms (2·4s) and ≈10 elementwise ops per state element."""
    s = model.state_size
    return 2 * s * 4 * s + 2 * 4 * s + 10 * s


@dataclass(frozen=True)
class Size:
    name: str
    features: int
    hidden: tuple[int, ...]
    population: int
    episode_length: int


SIZES = {
    "digits": Size("digits", 64, (), 64, 100),
    "mnist": Size("mnist", 784, (), 16, 100),
    "deep": Size("deep", 784, (32,), 16, 100),
}


def connection_ticks(size: Size, model: ModelConfig, episode_length: int) -> int:
    widths = [size.features, *size.hidden, 10]
    connections = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    passes = 2 if model.backward_pass else 1
    return size.population * episode_length * connections * model.micro_ticks * passes


def build_task(size: Size, episode_length: int) -> tuple[Task, TaskData]:
    """Real digits at digits size; MNIST-shaped random pixels otherwise (no download)."""
    if size.features == 64:
        return load_task("digits", "train", episode_length, 10)
    rng = np.random.default_rng(0)
    side = int(round(size.features**0.5))
    x = rng.integers(0, 256, (2000, side, side, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 2000).astype(np.int32)
    dataset = ArrayDataset("mnist-shaped", "bench", x, y, 10, float(x.mean()), float(x.std()))
    return make_task(dataset, episode_length, 10, True)


def population(model: ModelConfig, size: Size) -> vsml.Params:
    """An ES-like population: the initial parameters plus Gaussian noise per member."""
    params = vsml.init_params(jax.random.key(0), model)
    keys = jax.random.split(jax.random.key(1), len(params))
    return {
        name: np.asarray(value + 0.1 * jax.random.normal(k, (size.population, *value.shape)))
        for k, (name, value) in zip(keys, sorted(params.items()), strict=True)
    }


# ----------------------------------------------------------------------------------------------
# The implementations compared


def ours(spec: EvalSpec, data: TaskData, devices: tuple[Any, ...]) -> Callable[..., Any]:
    def run(pop: vsml.Params, ids: np.ndarray) -> np.ndarray:
        return evaluate_members(spec, data, pop, 0, ids, devices).fitness

    return run


def single_jit(layer_fn: vsml.LayerFn, task: Task, data: TaskData, model: ModelConfig) -> Callable:
    """All members in one jit on the default device, with ``layer_fn`` on the public layout."""

    @jax.jit
    def losses(pop: vsml.Params, keys: jax.Array) -> jax.Array:
        learner = VsmlLearner(model, layer_fn)
        episode = jax.vmap(lambda p, k: learner_episode(learner, p, k, data, task)[0])
        return episode(pop, keys).mean(axis=-1)

    def run(pop: vsml.Params, ids: np.ndarray) -> np.ndarray:
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.asarray(ids))
        return np.asarray(losses(pop, keys))

    return run


def public_layout_ticks(
    params: vsml.Params, state: vsml.LayerState, fwd_in: jax.Array, bwd_in: jax.Array, ticks: int
) -> tuple[vsml.LayerState, jax.Array, jax.Array]:
    """The factored fast path as it was before the speed work: [n_in, n_out, s], sigmoid."""
    m = fwd_in.shape[-1]
    w = params["lstm_w"]
    w_f, w_g, w_h = w[:m], w[m : 2 * m], w[2 * m :]
    message = (fwd_in @ w_f)[:, None, :] + (bwd_in @ w_g + params["lstm_b"])[None, :, :]
    h, c = state
    for _ in range(ticks):
        h, c = vsml.lstm_cell(h @ w_h + message, c)
    fwd_out = jnp.mean(h, axis=0) @ params["fwd_w"] + params["fwd_b"]
    bwd_out = jnp.mean(h, axis=1) @ params["bwd_w"] + params["bwd_b"]
    return vsml.LayerState(h, c), fwd_out, bwd_out


def kernel_limits(
    model: ModelConfig, members: int, connections: int, ticks: int = 20
) -> dict[str, tuple[Callable, tuple, int]]:
    """The recurrent matmul and the gates alone, for one chunk of members on one layer."""
    s = model.state_size
    k = jax.random.key(2)
    w = jax.random.normal(k, (members, 4 * s, s)) * 0.3
    h = jax.random.normal(k, (members, s, connections))
    z = jax.random.normal(k, (members, 4 * s, connections))

    def repeat(step: Callable[[jax.Array], jax.Array]) -> Callable:
        return jax.jit(lambda x0: jax.lax.fori_loop(0, ticks, lambda _, x: step(x), x0))

    def gates(hc: jax.Array) -> jax.Array:
        h, c = jax.vmap(vsml.fast_cell)(z + hc[:, :1], hc)
        return h + c  # both outputs, as in a tick

    matmul = repeat(lambda x: jnp.tanh(jnp.einsum("pks,psc->pkc", w, x)[:, :s]))
    work = members * connections * ticks
    return {"matmul K=16 alone": (matmul, (h,), work), "gates alone": (repeat(gates), (h,), work)}


# ----------------------------------------------------------------------------------------------
# Timing


def timed(fn: Callable, args: tuple, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, best of ``repeats`` later calls), seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return first, best


def roofline(quick: bool, repeats: int) -> tuple[float, float, float]:
    """(FLOP/s of a large f32 matmul, bytes/s of a large in-place scaling, reads + writes,
    tanh elements/s on data in cache).

    The copy runs on all local devices at once (each scales its shard) and in place
    (donated), so it measures the memory system, not page faults of a fresh output buffer.
    """
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n))
    _, t_mm = timed(jax.jit(lambda x: x @ x), (a,), repeats + 2)
    devices = jax.local_devices()
    sharding = NamedSharding(Mesh(np.asarray(devices), ("d",)), PartitionSpec("d"))
    x = jax.device_put(np.ones((len(devices), (64 if quick else 256) * 2**20 // 4 // len(devices)),
                               np.float32), sharding)
    scale = jax.jit(lambda v: v * 1.0001, donate_argnums=0)
    x = scale(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats + 4):
        start = time.perf_counter()
        x = scale(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / t_mm, 2 * x.nbytes / best, tanh_rate(repeats)


def tanh_rate(repeats: int, rounds: int = 64) -> float:
    """Elements/s of jnp.tanh on all local devices: the best of a chain of tanh per element
    and five independent tanh per element (as in the gates), on 64 kB to 1 MB per device
    (in cache), ``rounds`` times in one call so that dispatch does not count."""
    devices = jax.local_devices()
    sharding = NamedSharding(Mesh(np.asarray(devices), ("d",)), PartitionSpec("d"))

    def five(y: jax.Array) -> jax.Array:
        return 0.6 * sum(jnp.tanh(y * (0.7 + 0.1 * k) + 0.1 * k) for k in range(5))

    rates = []
    for per_device in (2**14, 2**16, 2**18):
        x = jax.device_put(np.linspace(-3, 3, len(devices) * per_device, dtype=np.float32)
                           .reshape(len(devices), per_device), sharding)
        for body, count in ((lambda y: jnp.tanh(y) * 2.5, 1), (five, 5)):
            fn = jax.jit(lambda v, body=body: jax.lax.fori_loop(0, rounds, lambda _, y: body(y),
                                                               v))
            _, best = timed(fn, (x,), repeats + 4)
            rates.append(count * x.size * rounds / best)
    return max(rates)


def best_roofline(quick: bool, repeats: int) -> tuple[float, float, float]:
    """The roofline as the best of this process and a child with XLA's default vector width.

    vsml_es asks XLA:CPU for 512-bit vectors on AVX-512 machines (vsml_es/host_devices.py);
    that helps the VSML fusions but may slow the large matmul, and the limit must not drop
    with a setting chosen for our own code.
    """
    flops, bandwidth, tanh = roofline(quick, repeats)
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_prefer_vector_width=512" not in flags:
        return flops, bandwidth, tanh
    env = {**os.environ, "XLA_FLAGS": flags.replace("--xla_cpu_prefer_vector_width=512",
                                                    "--xla_cpu_prefer_vector_width=256")}
    argv = [sys.executable, __file__, "--_roofline", str(int(quick)), str(repeats)]
    child = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    other = json.loads(child.stdout.strip().splitlines()[-1])
    return (max(flops, other["flops"]), max(bandwidth, other["bandwidth"]),
            max(tanh, other["tanh"]))


def rate(ticks: int, seconds: float) -> str:
    return f"{ticks / seconds / 1e6:9.2f} M"


# ----------------------------------------------------------------------------------------------
# Memory


def memory_report(size: Size, model: ModelConfig, lengths: tuple[int, ...]) -> None:
    """XLA's peak buffer bytes of one chunk-per-device evaluation, and the process's max RSS
    after evaluating, for each episode length (RSS in a fresh process per length)."""
    devices = tuple(jax.local_devices())
    print(f"\nmemory, {size.name} size, population {size.population}, "
          f"{len(devices)} device(s); chunk = population / devices")
    print(f"{'T':>6} {'XLA temp':>12} {'XLA total':>12} {'max RSS':>12}")
    rows = []
    for length in lengths:
        task, data = build_task(size, length)
        chunk = size.population // len(devices)
        fn = population_fitness_on(devices, task, VsmlLearner(model), "mean_loss")
        pop = population(model, size)
        ids = np.arange(size.population, dtype=np.int32)
        compiled = fn.lower(pop, np.int32(0), np.int32(0), ids, replicated(data, devices)).compile()
        mem = compiled.memory_analysis()
        total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                 - mem.alias_size_in_bytes)
        rss = _rss_in_subprocess(size.name, length)
        rows.append((mem.temp_size_in_bytes, total, rss))
        print(f"{length:>6} {mem.temp_size_in_bytes / 2**20:>9.2f} MB {total / 2**20:>9.2f} MB "
              f"{rss / 2**20:>9.1f} MB   (chunk {chunk})")
    (t0, a0, r0), (t1, a1, r1) = rows[0], rows[-1]
    print(f"ratio T={lengths[-1]} / T={lengths[0]}: XLA temp {t1 / t0:.3f}, XLA total "
          f"{a1 / a0:.3f}, max RSS {r1 / r0:.3f}")


def _rss_in_subprocess(size_name: str, length: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--_rss", size_name, str(length)],
        check=True, capture_output=True, text=True,
    ).stdout
    return int(out.strip().splitlines()[-1])


def _rss_child(size_name: str, length: int) -> None:
    """Evaluate once at this episode length; print the peak RSS in bytes."""
    size = SIZES[size_name]
    model = ModelConfig(hidden_layers=size.hidden)
    task, data = build_task(size, length)
    spec = EvalSpec(VsmlLearner(model), task, "mean_loss", 0,
                    size.population // len(jax.local_devices()))
    evaluate_members(spec, data, population(model, size), 0, np.arange(size.population))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


# ----------------------------------------------------------------------------------------------


def bench_size(size: Size, args: argparse.Namespace, limit: float) -> None:
    model = ModelConfig(hidden_layers=size.hidden)
    length = args.episode_length or size.episode_length
    task, data = build_task(size, length)
    devices = tuple(jax.local_devices())
    # The config's default chunk, but small enough that every device gets one.
    chunk = args.chunk or min(TrainingConfig().eval_chunk,
                              max(1, size.population // len(devices)))
    spec = EvalSpec(VsmlLearner(model), task, "mean_loss", 0, chunk)
    pop = population(model, size)
    ids = np.arange(size.population, dtype=np.int32)
    ticks = connection_ticks(size, model, length)
    widths = "→".join(str(w) for w in (size.features, *size.hidden, 10))
    print(f"\n{size.name}: {widths}, population {size.population}, T {length}, "
          f"{ticks / 1e6:.1f} M connection ticks per evaluation, eval_chunk {chunk}")
    print(f"  {'':36s} {'ct/s':>11} {'vs reference':>13} {'of roofline':>12} {'compile s':>10}")
    rows: dict[str, tuple[float, float]] = {}
    cases: list[tuple[str, Callable, tuple, int]] = [
        (f"ours ({len(devices)} device(s))", ours(spec, data, devices), (pop, ids), ticks),
    ]
    if fused.available():
        fused_spec = dataclasses.replace(
            spec, learner=VsmlLearner(dataclasses.replace(model, kernel="fused")))
        cases.append((f"ours (fused, {fused.isa()})", ours(fused_spec, data, devices),
                      (pop, ids), ticks))
    else:
        print("  (no 'ours (fused)' row: the fused kernel is not built here)")
    if args.ablations:
        if len(devices) > 1:
            cases.append(("ours, 1 device", ours(spec, data, devices[:1]), (pop, ids), ticks))
        cases.append(("public layout + sigmoid, all in 1 jit",
                      single_jit(public_layout_ticks, task, data, model), (pop, ids), ticks))
    if not args.no_reference:
        cases.append(("reference (per connection), 1 jit",
                      single_jit(reference.layer_ticks_reference, task, data, model),
                      (pop, ids), ticks))
    if args.limits:
        conns = max(a * b for a, b in vsml.layer_sizes(model, size.features, 10))
        for name, (fn, fargs, work) in kernel_limits(model, chunk, conns).items():
            cases.append((f"limit: {name}", fn, fargs, work))
    for name, fn, fargs, work in cases:
        first, best = timed(fn, fargs, args.repeats)
        rows[name] = (work / best, first - best)
    ref = next((v[0] for k, v in rows.items() if k.startswith("reference")), None)
    for name, (speed, compile_s) in rows.items():
        vs_ref = f"{speed / ref:12.2f}x" if ref else f"{'-':>13}"
        print(f"  {name:36s} {speed / 1e6:9.2f} M {vs_ref} {speed / limit:11.1%} "
              f"{compile_s:10.1f}")
    if args.profile:
        print("  where ours spends its time: " + time_split(ours(spec, data, devices), (pop, ids)))


def time_split(fn: Callable, args: tuple) -> str:
    """Shares of traced XLA op time: recurrent matmuls, elementwise fusions, the rest."""
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            jax.block_until_ready(fn(*args))
        (path,) = Path(trace_dir).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(path.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    shares = {"matmul": 0.0, "elementwise fusions": 0.0, "other ops": 0.0}
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not re.fullmatch(r"[a-z_\-]+(\.\d+)?", name):
            continue  # keep XLA ops, not Python frames or executor spans
        if name.startswith(("while", "conditional", "call")):
            continue  # containers: their ops are counted themselves
        if "dot" in name or "ynn" in name or "gemm" in name or "cublas" in name:
            shares["matmul"] += event["dur"]
        elif "fusion" in name:
            shares["elementwise fusions"] += event["dur"]
        else:
            shares["other ops"] += event["dur"]
    total = sum(shares.values()) or 1.0
    return ", ".join(f"{k} {v / total:.0%}" for k, v in shares.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="digits size only, T=20, fewer repeats (under a minute)")
    parser.add_argument("--sizes", default=None, help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (best)")
    parser.add_argument("--episode-length", type=int, default=None, help="override T")
    parser.add_argument("--ablations", action="store_true", help="add the ablation rows")
    parser.add_argument("--limits", action="store_true", help="add the building-block rows")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference rows")
    parser.add_argument("--chunk", type=int, default=None,
                        help="members per chunk (default: training.eval_chunk's default, at "
                        "most population / devices)")
    parser.add_argument("--profile", action="store_true",
                        help="print where ours spends its time (matmuls, fusions, rest)")
    parser.add_argument("--memory", action="store_true",
                        help="print peak memory of an evaluation for T=100 and T=2000 and stop")
    parser.add_argument("--_rss", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_roofline", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._roofline:
        flops, bandwidth, tanh = roofline(bool(args._roofline[0]), args._roofline[1])
        print(json.dumps({"flops": flops, "bandwidth": bandwidth, "tanh": tanh}))
        return
    if args._rss:
        _rss_child(args._rss[0], int(args._rss[1]))
        return
    model = ModelConfig()
    if args.memory:
        memory_report(SIZES["digits"], model, (100, 2000))
        return
    if args.quick:
        args.sizes = args.sizes or "digits"
        args.episode_length = args.episode_length or 20
        args.repeats = args.repeats or 2
    args.repeats = args.repeats or 3
    sizes = [SIZES[s] for s in (args.sizes or ",".join(SIZES)).split(",")]

    load_before = os.getloadavg()[0]
    devices = jax.local_devices()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"JAX {jax.__version__} on {devices[0].platform}: {len(devices)} local device(s) "
          f"({devices[0].device_kind}); load average {load_before:.1f} at start")
    flops, bandwidth, tanh = best_roofline(args.quick, args.repeats)
    old_limit = min(flops / flop_per_tick(model), bandwidth / BYTES_PER_TICK)
    limit = tick_limit(model, flops, bandwidth, tanh)
    print(f"roofline: matmul {flops / 1e9:.0f} GFLOP/s, copy {bandwidth / 1e9:.1f} GB/s "
          f"(read + write), tanh {tanh / 1e9:.2f} G elements/s -> {limit / 1e6:.1f} M "
          f"connection ticks/s ({flop_per_tick(model)} FLOP, {BYTES_PER_TICK} B, "
          f"{TANH_PER_TICK} tanh per tick; matmul {flop_per_tick(model) / flops * 1e9:.1f} ns "
          f"+ tanh {TANH_PER_TICK / tanh * 1e9:.1f} ns per tick); matmul and copy alone "
          f"would say {old_limit / 1e6:.0f} M")
    for size in sizes:
        bench_size(size, args, limit)
    print(f"\nbest of {args.repeats} call(s) per row; load average {os.getloadavg()[0]:.1f} at "
          "the end (a shared machine lowers every row; compare rows of one run only)")


if __name__ == "__main__":
    main()
