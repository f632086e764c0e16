"""Episode-sampling throughput vs VSML evaluation time for the same population batch.

For each case, two jitted functions run on the same P episodes of T steps: one only builds the
episodes (episode spec, then every step's gathered and preprocessed example: the work that
``Task.episode``/``Task.example`` add to an evaluation), the other is the full population
fitness (``episodes.population_fitness``, which does that same data work fused into the VSML
scan). Calls alternate between the two after an untimed compile call each; the median of
the repeats is reported with the ratio data / evaluation (goal: a few percent at most, i.e. data
is never the bottleneck).

    python benchmarks/data_throughput.py        # digits, and Fashion-MNIST cases if prepared
    python benchmarks/data_throughput.py --population 64 --steps 200 --data-dir ~/vsml_es_data
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp

from vsml_es.config import ModelConfig, PreprocessConfig
from vsml_es.data import DatasetError, dataset_status
from vsml_es.episodes import episode_keys, population_fitness
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.tasks import load_mixture_task, load_task
from vsml_es.vsml import init_params


@partial(jax.jit, static_argnames=("task",))
def sample_episodes(seed, generation, episode_ids, data, task):
    """Every (x, y) of every episode, as the evaluation builds them (summed to stay cheap)."""
    keys = episode_keys(seed, generation, episode_ids)

    def one(key):
        spec = task.episode(jax.random.split(key)[0])
        xs, ys = jax.vmap(lambda t: task.example(data, spec, t))(jnp.arange(task.episode_length))
        return xs.sum() + ys.sum()

    return jax.vmap(one)(keys)


def cases(args) -> list[tuple[str, object, object]]:
    """(label, task, data) for every case whose data is available."""
    t, c = args.steps, 10
    out = [("digits 8x8 (quickstart)", *load_task("digits", "train", t, c))]
    if dataset_status("fashion_mnist", args.data_dir).available:
        small = PreprocessConfig(resize=(8, 8))
        out.append(("fashion_mnist resized to 8x8",
                    *load_task("fashion_mnist", "train", t, c, data_dir=args.data_dir,
                               preprocess=small)))
        proj = PreprocessConfig(resize=(8, 8), shuffle="fresh", projection="pool",
                                projection_fraction=0.5)
        out.append(("fashion 8x8 + shuffle + 50% pooled projection",
                     *load_task("fashion_mnist", "train", t, c, data_dir=args.data_dir,
                                preprocess=proj)))
        out.append(("mixture digits+fashion 8x8 (1:1)",
                    *load_mixture_task(("digits:train", "fashion_mnist:train"), (1.0, 1.0),
                                       "train", t, c, True, args.data_dir, small)))
        if args.full_size:
            out.append(("fashion_mnist 28x28, 50% fresh projection",
                        *load_task("fashion_mnist", "train", t, c, data_dir=args.data_dir,
                                   preprocess=PreprocessConfig(projection="fresh",
                                                               projection_fraction=0.5))))
    else:
        print("(fashion_mnist is not prepared: run 'vsml-es data prepare fashion_mnist' for "
              "the Fashion-MNIST cases)")
    return out


def timed_pair(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two calls, alternated so that background load hits both alike."""
    jax.block_until_ready(first())  # compile
    jax.block_until_ready(second())
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=32, help="episodes per batch (P)")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (T)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--full-size", action="store_true",
                        help="also a 784-input case (slow: VSML on 7840 connections)")
    args = parser.parse_args(argv)
    try:
        todo = cases(args)
    except DatasetError as err:
        parser.error(str(err))
    model = ModelConfig()
    one = init_params(jax.random.key(0), model)
    params = jax.tree.map(lambda a: jnp.broadcast_to(a, (args.population, *a.shape)), one)
    ids = jnp.arange(args.population, dtype=jnp.int32)
    seed, gen = jnp.int32(0), jnp.int32(1)
    print(f"P={args.population} episodes of T={args.steps} steps, median of {args.repeats}, "
          f"{jax.devices()[0].platform}")
    header = f"{'case':48s} {'data ep/s':>10s} {'eval ep/s':>10s} {'data/eval':>9s}"
    print(header)
    print("-" * len(header))
    for label, task, data in todo:
        t_data, t_eval = timed_pair(
            lambda task=task, data=data: sample_episodes(seed, gen, ids, data, task),
            lambda task=task, data=data: population_fitness(
                params, seed, gen, ids, data, task, VsmlLearner(model), "mean_loss"),
            args.repeats)
        print(f"{label:48s} {args.population / t_data:10.1f} {args.population / t_eval:10.1f} "
              f"{t_data / t_eval:9.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
