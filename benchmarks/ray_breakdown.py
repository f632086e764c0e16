"""Where a Ray generation's time goes beside the evaluation itself, part by part.

Runs the quickstart on the real ``RayEvaluator`` (2 workers) and the in-process evaluator,
generation by generation in pairs as ``ray_overhead.py`` does, and splits each Ray generation
into: the driver's own work (recipe, submission, gathering: wall and CPU time), the delay from
submission to a worker starting the task and from a worker's answer to the driver seeing it,
each worker's non-evaluation work (redrawing its members, slicing, digest) and its evaluation,
and the CPU time of Ray's own processes (GCS, raylet, agents) per generation. Other load on
the machine inflates wall times most, CPU times too (shared caches and cores: about 2x at load
20 on the 2-core development machine), so compare parts within one run.

    python benchmarks/ray_breakdown.py --generations 8
    python benchmarks/ray_breakdown.py --worker-cores all   # each worker sizes XLA to all cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vsml_es.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generations", type=int, default=8, help="timed generations")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--worker-cores", choices=("split", "all"), default="split",
                        help="workers split this machine's cores (default) or each take all")
    args = parser.parse_args(argv)
    config = load_config(args.experiment, [*args.overrides, f"distributed.workers={args.workers}",
                                           "logging.progress=false"])

    from vsml_es import distributed

    with distributed.ray_session(config.distributed):
        import jax
        import ray

        from vsml_es.distributed import evaluator as dev
        from vsml_es.distributed.worker import ShardWorker
        from vsml_es.evaluator import AskRecipe, LocalEvaluator, build_eval_spec
        from vsml_es.trainer import Trainer

        class TimedWorker(ShardWorker):
            """The real worker, timing its parts (read back after each generation)."""

            def __init__(self, *a: Any, **k: Any):
                super().__init__(*a, **k)
                self.log: list[dict[str, float]] = []

            def evaluate_recipe(self, data_ref: Any, drawer_ref: Any, recipe: Any,
                                members: np.ndarray, generation: int, episode_ids: np.ndarray,
                                verify: bool) -> tuple:
                import vsml_es.distributed.worker as w

                t0, c0 = time.time(), time.process_time()
                real_eval, real_slice = w.evaluate_members, w.slice_members
                marks: dict[str, float] = {}

                def timed_slice(*a: Any) -> Any:
                    marks["drawn"] = time.perf_counter()
                    marks["drawn_cpu"] = time.process_time()
                    return real_slice(*a)

                def timed_eval(*a: Any, **k: Any) -> Any:
                    marks["eval0"], marks["eval0_cpu"] = time.perf_counter(), time.process_time()
                    out = real_eval(*a, **k)
                    marks["eval1"], marks["eval1_cpu"] = time.perf_counter(), time.process_time()
                    return out

                w.evaluate_members, w.slice_members = timed_eval, timed_slice
                p0 = time.perf_counter()
                try:
                    out = super().evaluate_recipe(data_ref, drawer_ref, recipe, members,
                                                  generation, episode_ids, verify)
                finally:
                    w.evaluate_members, w.slice_members = real_eval, real_slice
                p1, c1 = time.perf_counter(), time.process_time()
                self.log.append({
                    "start": t0, "end": time.time(),
                    "draw_ms": 1e3 * (marks["drawn"] - p0),
                    "slice_ms": 1e3 * (marks["eval0"] - marks["drawn"]),
                    "eval_ms": 1e3 * (marks["eval1"] - marks["eval0"]),
                    "after_ms": 1e3 * (p1 - marks["eval1"]),
                    "pre_cpu_ms": 1e3 * (marks["eval0_cpu"] - c0),
                    "eval_cpu_ms": 1e3 * (marks["eval1_cpu"] - marks["eval0_cpu"]),
                    "after_cpu_ms": 1e3 * (c1 - marks["eval1_cpu"]),
                })
                return out

            def take_log(self) -> list[dict[str, float]]:
                log, self.log = self.log, []
                return log

        # Driver-side timers around the real evaluator's parts.
        marks: dict[str, list[float]] = {"send": [], "collect": [], "submit_wall": [],
                                         "seen_wall": []}
        real_send, real_collect = dev.RayEvaluator._send, dev.RayEvaluator._collect

        def send(self: Any, gen: Any, shard: int, slot: int, backup: bool) -> None:
            t = time.perf_counter()
            marks["submit_wall"].append(time.time())
            real_send(self, gen, shard, slot, backup)
            marks["send"].append(time.perf_counter() - t)

        def collect(self: Any, gen: Any, ref: Any, sent: Any) -> None:
            marks["seen_wall"].append(time.time())
            t = time.perf_counter()
            real_collect(self, gen, ref, sent)
            marks["collect"].append(time.perf_counter() - t)

        dev.RayEvaluator._send, dev.RayEvaluator._collect = send, collect
        if args.worker_cores == "all":
            dev.cores_per_worker = lambda dist, workers: None

        spec, data = build_eval_spec(config)
        ray_eval = distributed.RayEvaluator(spec, data, config.distributed,
                                            worker_cls=TimedWorker)
        local = LocalEvaluator(spec, data)
        trainer = Trainer(config, Path("/tmp/vsml-es-ray-breakdown"), evaluator=local, spec=spec,
                          data=data)
        state = trainer.initial_state()
        es = trainer.method.strategy
        me = os.getpid()
        worker_pids = {s.info["pid"] for s in ray_eval.slots}
        devices = [s.info["devices"] for s in ray_eval.slots]
        ray_pids = [p for p in _descendants(me) if p not in worker_pids]
        rows = []
        identical = True
        try:
            for g in range(args.generations + 1):
                key = jax.random.key(g)
                population, _ = es.algorithm.ask(key, state.es_state, es.params)
                jax.block_until_ready(population)
                recipe = AskRecipe(es.algorithm, key, state.es_state, es.params)
                t, c = time.perf_counter(), time.process_time()
                res_local = local.evaluate(population, g, trainer.method.episode_ids)
                local_wall, local_cpu = time.perf_counter() - t, time.process_time() - c
                for v in marks.values():
                    v.clear()
                before = {p: cpu_seconds(p) for p in [*ray_pids, *worker_pids]}
                t, c, t_wall = time.perf_counter(), time.process_time(), time.time()
                res_ray = ray_eval.evaluate_asked(recipe, population, g, trainer.method.episode_ids)
                ray_wall, driver_cpu = time.perf_counter() - t, time.process_time() - c
                after = {p: cpu_seconds(p) for p in before}
                logs = [entry for s in ray_eval.slots
                        for entry in ray.get(s.handle.take_log.remote())]
                identical &= bool(np.array_equal(res_local.fitness, res_ray.fitness))
                if not g:
                    continue
                starts = sorted(e["start"] for e in logs)
                ends = sorted(e["end"] for e in logs)
                rows.append({
                    "local_ms": 1e3 * local_wall, "local_cpu_ms": 1e3 * local_cpu,
                    "ray_ms": 1e3 * ray_wall, "driver_cpu_ms": 1e3 * driver_cpu,
                    "before_first_send_ms": 1e3 * (marks["submit_wall"][0] - t_wall),
                    "after_last_answer_ms": 1e3 * (t_wall + ray_wall - marks["seen_wall"][-1]),
                    "send_ms": 1e3 * sum(marks["send"]),
                    "collect_ms": 1e3 * sum(marks["collect"]),
                    "dispatch_ms": 1e3 * statistics.mean(
                        s - d for s, d in zip(starts, marks["submit_wall"], strict=False)),
                    "return_ms": 1e3 * statistics.mean(
                        s - e for s, e in zip(marks["seen_wall"], ends, strict=False)),
                    "ray_procs_cpu_ms": 1e3 * sum(after[p] - before[p] for p in ray_pids),
                    "workers_cpu_ms": 1e3 * sum(after[p] - before[p] for p in worker_pids),
                    "shards": len(logs),
                    **{k: statistics.mean(e[k] for e in logs)
                       for k in ("draw_ms", "slice_ms", "eval_ms", "after_ms", "pre_cpu_ms",
                                 "eval_cpu_ms", "after_cpu_ms")},
                    "backups": ray_eval.backups_sent,
                })
        finally:
            ray_eval.close()
    med = {k: round(statistics.median(r[k] for r in rows), 1) for k in rows[0]}
    med["ratio_paired"] = round(statistics.median(r["ray_ms"] / r["local_ms"] for r in rows), 3)
    med["identical_fitness"] = identical
    med["worker_devices"] = [len(s) for s in devices]
    med["load_average"] = round(os.getloadavg()[0], 1)
    for r in rows:
        print(json.dumps({k: round(v, 1) for k, v in r.items()}))
    print(json.dumps(med))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
