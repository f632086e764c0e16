"""Paired A/B of the Ray workers' settings on one machine, beside the in-process evaluator.

``before``: each worker sizes XLA to every core of the machine and the ES recipe goes through
the object store; ``now``: the workers split the cores (one XLA host device and thread each
for 2 workers on 2 cores) and the recipe travels inside the task. Both sets of actors stay up
(half a CPU reserved each) and the three evaluators take turns, rotating the order every
generation, so background load hits all alike. Prints median wall seconds per generation, the
paired ratios, the CPU seconds of the driver and the workers per generation, and whether all
three gave bit-identical fitness. Under heavy load the ratios mostly show how the kernel
shares the cores between thread counts; run it on a quiet machine to decide.

    python benchmarks/ray_worker_cores.py --generations 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from ray_breakdown import cpu_seconds  # a sibling script: benchmarks/ is on sys.path

from vsml_es.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generations", type=int, default=10, help="timed generations")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(args.experiment, [
        *args.overrides, f"distributed.workers={args.workers}",
        "distributed.cpus_per_worker=0.5", "logging.progress=false"])

    from vsml_es import distributed

    with distributed.ray_session(config.distributed):
        import jax

        from vsml_es.distributed import evaluator as dev
        from vsml_es.evaluator import AskRecipe, LocalEvaluator, build_eval_spec
        from vsml_es.trainer import Trainer

        spec, data = build_eval_spec(config)
        split, inline = dev.cores_per_worker, dev.INLINE_BYTES
        dev.cores_per_worker = lambda dist, workers: None
        before = distributed.RayEvaluator(spec, data, config.distributed)
        dev.cores_per_worker = split
        now = distributed.RayEvaluator(spec, data, config.distributed)
        local = LocalEvaluator(spec, data)
        trainer = Trainer(config, Path("/tmp/vsml-es-ray-cores"), evaluator=local, spec=spec,
                          data=data)
        state, es = trainer.initial_state(), trainer.method.strategy
        wall: dict[str, list[float]] = {"local": [], "before": [], "now": []}
        cpu: dict[str, list[float]] = {name: [] for name in wall}
        identical, order = True, list(wall)
        try:
            for g in range(args.generations + 1):  # generation 0 is the warm-up
                key = jax.random.key(g)
                population, _ = es.algorithm.ask(key, state.es_state, es.params)
                recipe = AskRecipe(es.algorithm, key, state.es_state, es.params)
                fitness = {}
                for name in order:
                    ray_eval = {"before": before, "now": now}.get(name)
                    pids = [os.getpid(), *(s.info["pid"] for s in
                                           (ray_eval.slots if ray_eval else []))]
                    dev.INLINE_BYTES = -1 if name == "before" else inline
                    c, t = sum(map(cpu_seconds, pids)), time.perf_counter()
                    if ray_eval is None:
                        result = local.evaluate(population, g, trainer.episode_ids)
                    else:
                        result = ray_eval.evaluate_asked(recipe, population, g,
                                                         trainer.episode_ids)
                    if g:
                        wall[name].append(time.perf_counter() - t)
                        cpu[name].append(sum(map(cpu_seconds, pids)) - c)
                    fitness[name] = result.fitness
                identical &= all(np.array_equal(fitness["local"], f) for f in fitness.values())
                order = order[1:] + order[:1]
        finally:
            dev.INLINE_BYTES = inline
            before.close()
            now.close()

    def paired(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(wall[a], wall[b], strict=True)), 3)

    report = {
        **{f"{k}_s_per_gen": round(statistics.median(v), 4) for k, v in wall.items()},
        **{f"{k}_cpu_s_per_gen": round(statistics.median(v), 3) for k, v in cpu.items()},
        "before_over_local_paired": paired("before", "local"),
        "now_over_local_paired": paired("now", "local"),
        "now_over_before_paired": paired("now", "before"),
        "identical_fitness": identical,
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(report))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
