"""Record or compare a short quickstart-like fitness trajectory (speed work must not change it).

Runs a few generations of the quickstart experiment with a small population and saves every
member's fitness per generation. ``--compare FILE`` reruns and prints the largest difference,
so an optimization of the inner loop can show it leaves the meta-training trajectory unchanged
up to float rounding.

    python benchmarks/trajectory.py --save /tmp/before.npz
    python benchmarks/trajectory.py --compare /tmp/before.npz
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from vsml_es.config import load_config
from vsml_es.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def record(generations: int, population: int, overrides: list[str]) -> np.ndarray:
    """[generations, population] fitness of a fresh quickstart-like run."""
    config = load_config(
        ROOT / "experiments" / "quickstart.yaml",
        [
            f"training.population_size={population}",
            f"training.generations={generations}",
            f"training.eval_chunk={population}",
            "logging.progress=false",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, Path(run_dir))
        state = trainer.initial_state()
        rows = []
        inner = trainer.evaluator.evaluate

        def spy(population_, generation, episode_ids):
            result = inner(population_, generation, episode_ids)
            rows.append(np.asarray(result.fitness))
            return result

        trainer.evaluator.evaluate = spy  # type: ignore[method-assign]
        for _ in range(generations):
            state, _ = trainer.step(state)
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override, e.g. training.sigma=1.0")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args()
    fitness = record(args.generations, args.population, args.overrides)
    print("mean fitness per generation:", np.round(fitness.mean(axis=1), 6).tolist())
    if args.save:
        np.savez(args.save, fitness=fitness)
        print(f"saved {args.save}")
        return
    before = np.load(args.compare)["fitness"]
    diff = np.abs(fitness - before)
    rel = diff / np.maximum(np.abs(before), 1e-12)
    print(f"max |Δfitness| = {diff.max():.3e}  max relative = {rel.max():.3e}")
    for g in range(before.shape[0]):
        print(f"  generation {g}: before {before[g].mean():.6f}  after {fitness[g].mean():.6f}"
              f"  max |Δ| {diff[g].max():.2e}")


if __name__ == "__main__":
    main()
