"""The driver's own time per generation at paper scale: ES ask and tell, fitness sanitizing,
the metrics row, the recipe the workers redraw members from, and checkpoints.

The evaluation is left out (its fitness is drawn at random, instantly): what remains is the
work one driver does per generation whatever the number of workers. Runs the real Trainer
step (Open_ES + Adam, as the paper) at populations 2048 and 8192 for VSML's 2,384
meta-parameters and the deep variants' (one LSTM per layer: 4,768; and a separate backward
LSTM: 9,536). Also reports whether ask/tell compiled again after generation 0.

    python benchmarks/driver_scale.py                    # about a minute on 2 cores
    python benchmarks/driver_scale.py --generations 20 --populations 2048
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vsml_es.config import load_config
from vsml_es.distributed.transfer import choose, wire_nbytes
from vsml_es.evaluator import AskRecipe, Evaluation, build_eval_spec
from vsml_es.metrics import MetricsLog
from vsml_es.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # name: config overrides
    "vsml": ["model.hidden_layers=[]"],
    "deep-layerwise": ["model.hidden_layers=[32]", "model.layerwise_lstms=true"],
    "deep-layerwise-backward": ["model.hidden_layers=[32]", "model.layerwise_lstms=true",
                              "model.separate_backward_lstm=true", "model.backward_pass=true"],
}


class InstantFitness:
    """Stands in for the evaluation (the driver's time is measured, not the workers')."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def evaluate(self, population: Any, generation: int, episode_ids: np.ndarray) -> Evaluation:
        fitness = self.rng.normal(size=len(episode_ids)).astype(np.float32)
        return Evaluation(fitness, np.full(len(episode_ids), 0.1, np.float32))

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def measure(model: list[str], population: int, generations: int, out: Path) -> dict[str, Any]:
    config = load_config(str(ROOT / "experiments" / "paper_mnist_projections.yaml"), [
        *model, "task.dataset=digits", "task.preprocess.projection=none",
        "task.episode_length=10", f"training.population_size={population}",
        "logging.progress=false"])
    spec, data = build_eval_spec(config)
    trainer = Trainer(config, out, InstantFitness(), spec, data)
    es = trainer.method.strategy
    algorithm = type(es.algorithm)
    state = trainer.initial_state()
    compiled_before = (algorithm.ask._cache_size(), algorithm.tell._cache_size())
    step_s, wire_s = [], []
    drawer = None
    for g in range(generations + 1):
        start = time.perf_counter()
        state, _ = trainer.step(state)
        if g:
            step_s.append(time.perf_counter() - start)
        if g == 0:  # the recipe a Ray run sends: one jaxpr analysis per run, then per generation
            key = np.asarray([0, g], np.uint32)
            import jax

            recipe = AskRecipe(es.algorithm, jax.random.wrap_key_data(key), state.es_state,
                               es.params)
            population_0, _ = es.algorithm.ask(recipe.key, state.es_state, es.params)
            _, drawer = choose("recipe", recipe, population_0, shards=128)
            compiled_after_0 = (algorithm.ask._cache_size(), algorithm.tell._cache_size())
        else:
            start = time.perf_counter()
            wire = drawer.wire(AskRecipe(es.algorithm, recipe.key, state.es_state, es.params))
            wire_s.append(time.perf_counter() - start)
    compiled_after = (algorithm.ask._cache_size(), algorithm.tell._cache_size())
    log = MetricsLog(out)
    start = time.perf_counter()
    trainer.save_checkpoint(state, log)
    checkpoint_s = time.perf_counter() - start
    log.close()
    dims = es.algorithm.num_dims
    return {
        "params": dims, "population": population,
        "step_ms": 1e3 * statistics.median(step_s),
        "wire_ms": 1e3 * statistics.median(wire_s),
        "checkpoint_ms": 1e3 * checkpoint_s,
        "every": config.checkpoint.every,
        "wire_bytes": wire_nbytes(wire),
        "members_bytes": population * dims * 4,
        "recompiled": compiled_after != compiled_after_0,
        "first_compiles": (compiled_after_0[0] - compiled_before[0],
                           compiled_after_0[1] - compiled_before[1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10, help="timed generations")
    parser.add_argument("--populations", default="2048,8192")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of "
                        + ", ".join(MODELS))
    args = parser.parse_args(argv)
    try:
        populations = [int(p) for p in args.populations.split(",")]
        models = [MODELS[m] for m in args.models.split(",")]
    except (ValueError, KeyError) as err:
        parser.error(f"bad --populations or --models: {err}")
    if args.generations < 1 or any(p < 2 or p % 2 for p in populations):
        parser.error("--generations >= 1 and even populations >= 2")
    print(f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'params':>7} {'pop':>5} {'step ms':>8} {'recipe ms':>9} {'ckpt ms':>8} "
          f"{'recipe B':>9} {'members B':>11} {'recompiled':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(models):
            for population in populations:
                r = measure(model, population, args.generations, Path(tmp) / f"{i}-{population}")
                print(f"{r['params']:>7} {r['population']:>5} {r['step_ms']:>8.1f} "
                      f"{r['wire_ms']:>9.2f} {r['checkpoint_ms']:>8.0f} {r['wire_bytes']:>9,} "
                      f"{r['members_bytes']:>11,} {str(r['recompiled']):>10}", flush=True)
    print(f"step: the Trainer's generation (ask, fitness, sanitize, tell, metrics row) without "
          f"evaluation, median of {args.generations}; recipe: building the per-generation "
          "recipe; ckpt: one checkpoint (every checkpoint.every generations); recompiled: ask "
          f"or tell compiled again after generation 0. Load average {os.getloadavg()[0]:.1f} "
          "at the end.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
