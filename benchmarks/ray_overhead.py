"""Generation time on an embedded Ray with N workers vs the in-process evaluator, in one run.

Both evaluators get the same populations (one ES ask per generation; Ray workers redraw
theirs from the ES recipe where the strategy allows, as in training); timings alternate
in-process / Ray generation by generation so background load hits both alike, after one
untimed warm-up generation each (JAX compilation). Prints the median time per generation,
the ratio Ray / in-process (goal <= 1.1), the driver <-> worker bytes per generation, and
checks that both gave bit-identical fitness. Then whole in-process generations of the real
Trainer (ask, evaluation, tell, metrics) against the evaluation inside them: the median of
the per-generation ratios (goal <= 1.1).

    python benchmarks/ray_overhead.py                      # quickstart, 2 workers, 5 generations
    python benchmarks/ray_overhead.py --workers 1 --generations 3 --set task.episode_length=50
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

from vsml_es.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generations", type=int, default=5, help="timed generations")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    config = load_config(args.experiment, [*args.overrides, f"distributed.workers={args.workers}",
                                           "logging.progress=false"])

    from vsml_es import distributed  # Ray starts before the dataset and the JAX work

    started = time.perf_counter()
    with distributed.ray_session(config.distributed):
        import jax

        from vsml_es.evaluator import AskRecipe, LocalEvaluator, build_eval_spec
        from vsml_es.trainer import Trainer

        spec, data = build_eval_spec(config)
        ray_eval = distributed.RayEvaluator(spec, data, config.distributed)
        startup = time.perf_counter() - started
        local = LocalEvaluator(spec, data)
        trainer = Trainer(config, Path("/tmp/vsml-es-ray-overhead"), evaluator=local, spec=spec,
                          data=data)
        state = trainer.initial_state()
        es = trainer.method.strategy
        times: dict[str, list[float]] = {"local": [], "ray": []}
        identical = True
        try:
            for g in range(args.generations + 1):  # generation 0 is the warm-up
                key = jax.random.key(g)
                population, _ = es.algorithm.ask(key, state.es_state, es.params)
                recipe = AskRecipe(es.algorithm, key, state.es_state, es.params)
                results = {}
                for name in ("local", "ray"):
                    t = time.perf_counter()
                    if name == "local":
                        results[name] = local.evaluate(population, g, trainer.episode_ids)
                    else:
                        results[name] = ray_eval.evaluate_asked(recipe, population, g,
                                                                trainer.episode_ids)
                    if g:
                        times[name].append(time.perf_counter() - t)
                identical &= bool(np.array_equal(results["local"].fitness,
                                                 results["ray"].fitness))
            generations = args.generations + 1
            sent = ray_eval.bytes_sent / generations
            received = ray_eval.bytes_received / generations
            status = ray_eval.status()
            transfer = ray_eval.transfer.mode if ray_eval.transfer else "members"
        finally:
            ray_eval.close()
        timed = _Timed(spec, data)
        trainer.evaluator = timed
        state = trainer.initial_state()
        step_s = []
        for g in range(args.generations + 1):
            t = time.perf_counter()
            state, _ = trainer.step(state)
            if g:
                step_s.append(time.perf_counter() - t)
        eval_s = timed.seconds[1:]
    outside = statistics.median(s / e for s, e in zip(step_s, eval_s, strict=True))
    local_s, ray_s = statistics.median(times["local"]), statistics.median(times["ray"])
    # Paired per generation (the two ran back to back): robust to slow drifts in machine load.
    paired = statistics.median(r / loc for r, loc in zip(times["ray"], times["local"], strict=True))
    report = {
        "population": config.training.population_size,
        "episode_length": config.task.episode_length,
        "eval_chunk": config.training.eval_chunk,
        "workers": args.workers,
        "generations_timed": args.generations,
        "local_s_per_gen": round(local_s, 4),
        "ray_s_per_gen": round(ray_s, 4),
        "ratio_ray_over_local": round(ray_s / local_s, 3),
        "ratio_paired_median": round(paired, 3),
        "ratio_best_of": round(min(times["ray"]) / min(times["local"]), 3),
        "bytes_to_workers_per_gen": int(sent),
        "bytes_from_workers_per_gen": int(received),
        "ray_startup_s": round(startup, 1),
        "identical_fitness": identical,
        "status": status,
        "transfer": transfer,
        "inprocess_generation_s": round(statistics.median(step_s), 4),
        "inprocess_evaluation_s": round(statistics.median(eval_s), 4),
        "ratio_generation_over_evaluation_paired": round(outside, 3),
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(f"in-process {local_s:.3f} s/gen, Ray ({args.workers} workers) {ray_s:.3f} s/gen: "
          f"ratio {ray_s / local_s:.3f} (paired {paired:.3f}, best-of "
          f"{min(times['ray']) / min(times['local']):.3f}); {sent / 1e3:.1f} kB to workers and "
          f"{received / 1e3:.2f} kB back per generation ({transfer} transfer); fitness "
          f"identical: {identical}")
    print(f"in-process generation {statistics.median(step_s):.3f} s vs its evaluation "
          f"{statistics.median(eval_s):.3f} s: ratio {outside:.3f} (median of paired "
          f"generations); load average {os.getloadavg()[0]:.1f}")
    print(json.dumps(report))
    return 0 if identical else 1


class _Timed:
    """The in-process evaluator, timing each evaluation (to split a generation's time)."""

    def __init__(self, spec: object, data: object):
        from vsml_es.evaluator import LocalEvaluator

        self._inner = LocalEvaluator(spec, data)
        self.seconds: list[float] = []

    def evaluate(self, population: object, generation: int, episode_ids: np.ndarray) -> object:
        t = time.perf_counter()
        result = self._inner.evaluate(population, generation, episode_ids)
        self.seconds.append(time.perf_counter() - t)
        return result

    def status(self) -> dict:
        return {}

    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
