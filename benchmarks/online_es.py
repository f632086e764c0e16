"""Online ES (NRES) against full-episode ES, and NRES on Ray against in-process, in one run.

Three figures, each a ratio of two things measured in this process, alternating generation
by generation so background load hits both alike, after untimed warm-up generations (JAX
compilation, and the online burn-in):

1. examples per second per core of NRES windows vs full-episode ES at the same population
   (an example = one online step of one member);
2. NRES generation time with ``--workers`` Ray workers / in-process (goal <= 1.1), the
   two bit-identical;
3. bytes to and from the workers per window, at two populations and two network sizes: the
   bytes down do not depend on either (θ, the generation and a block's first particle and
   count); the bytes up are two losses and two accuracies per particle.

    python benchmarks/online_es.py                 # quickstart, P 32, window 50, stream 500
    python benchmarks/online_es.py --generations 3 --set training.population_size=16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from vsml_es.config import load_config

ROOT = Path(__file__).resolve().parent.parent
BASE = ["training.method=nres", "training.population_size=32", "training.eval_chunk=16",
        "task.episode_length=500", "training.window=50", "logging.progress=false"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generations", type=int, default=5, help="timed generations")
    parser.add_argument("--es-episode", type=int, default=200,
                        help="full-episode ES's episode length (quickstart's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    overrides = [*BASE, *args.overrides]
    config = load_config(args.experiment, [*overrides, f"distributed.workers={args.workers}"])

    from vsml_es import distributed  # Ray starts before the dataset and the JAX work

    with distributed.ray_session(config.distributed):
        from vsml_es.distributed import RayEvaluator
        from vsml_es.evaluator import LocalEvaluator, build_eval_spec
        from vsml_es.methods import build_method, initial_params

        spec, data = build_eval_spec(config)
        nres = build_method(config, spec)
        local = LocalEvaluator(spec, data)
        ray_eval = RayEvaluator(spec, data, config.distributed, log=lambda _: None)
        es_config = load_config(args.experiment, [
            *args.overrides, "training.method=es", f"task.episode_length={args.es_episode}",
            f"training.population_size={config.training.population_size}",
            f"training.eval_chunk={config.training.eval_chunk}", "distributed.workers=0"])
        es_spec, es_data = build_eval_spec(es_config)
        es = build_method(es_config, es_spec)
        es_local = LocalEvaluator(es_spec, es_data)
        try:
            state = nres.init(initial_params(config, spec))
            es_state = es.init(initial_params(es_config, es_spec))
            times: dict[str, list[float]] = {"nres": [], "ray": [], "es": []}
            warm = 2
            for g in range(warm + args.generations):
                t0 = time.perf_counter()
                new, row = nres.step(state, g, local)
                t1 = time.perf_counter()
                new_ray, row_ray = nres.step(state, g, ray_eval)
                t2 = time.perf_counter()
                es_state, _ = es.step(es_state, g, es_local)
                t3 = time.perf_counter()
                same = all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
                           for a, b in zip(_leaves(new), _leaves(new_ray), strict=True))
                assert same, f"generation {g}: Ray and in-process NRES differ"
                state = new
                if g >= warm:
                    times["nres"].append(t1 - t0)
                    times["ray"].append(t2 - t1)
                    times["es"].append(t3 - t2)
            down, up = ray_eval.window_bytes
        finally:
            ray_eval.close()
        bytes_rows = [_bytes_at(args.experiment, args.overrides, p, hidden, args.workers)
                      for p in (16, 64) for hidden in ([], [64])]

    cores = os.cpu_count() or 1
    p, window = config.training.population_size, config.training.window
    med = {k: statistics.median(v) for k, v in times.items()}
    nres_rate = p * window / med["nres"] / cores
    es_rate = p * args.es_episode / med["es"] / cores
    result = {
        "population": p, "window": window, "stream": config.task.episode_length,
        "es_episode": args.es_episode, "cores": cores, "workers": args.workers,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "nres_examples_per_s_per_core": round(nres_rate, 1),
        "es_examples_per_s_per_core": round(es_rate, 1),
        "nres_over_es": round(nres_rate / es_rate, 3),
        "ray_over_in_process": round(med["ray"] / med["nres"], 3),
        "bytes_per_window": {"down": down, "up": up},
        "bytes_by_size": bytes_rows,
    }
    print(json.dumps(result, indent=1))
    return 0


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def _bytes_at(experiment: str, overrides: list[str], population: int, hidden: list[int],
              workers: int) -> dict:
    """One window on Ray at this population and hidden layout: bytes down and up."""
    from vsml_es.distributed import RayEvaluator
    from vsml_es.evaluator import build_eval_spec
    from vsml_es.methods import build_method, initial_params

    config = load_config(experiment, [*BASE, *overrides, f"training.population_size={population}",
                                      f"model.hidden_layers={hidden}", "task.episode_length=8",
                                      "training.window=4", "training.eval_chunk=8",
                                      f"distributed.workers={workers}"])
    spec, data = build_eval_spec(config)
    method = build_method(config, spec)
    evaluator = RayEvaluator(spec, data, config.distributed, log=lambda _: None)
    try:
        state = method.init(initial_params(config, spec))
        state, _ = method.step(state, 0, evaluator)  # the first asks for the history
        method.step(state, 1, evaluator)
        down, up = evaluator.window_bytes
    finally:
        evaluator.close()
    return {"population": population, "hidden_layers": hidden, "down": down, "up": up}


if __name__ == "__main__":
    raise SystemExit(main())
