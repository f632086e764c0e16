"""Meta-testing: learning curves of every learner on held-out streams, identical for all.

A *contender* is a learner with its parameters: meta-learned ones bring the parameters ES
found, tuned ones (SGD/Adam) get theirs from a grid search on meta-training streams. All of
them run through the same jitted episodes. Evaluation episodes use their own fixed seed
(``metatest.seed``), never the training seed, and tuning uses streams of the meta-training
distribution with a seed offset of its own, so nothing is tuned on the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import Config
from vsml_es.episodes import episode_keys, learner_episode
from vsml_es.errors import Report, report
from vsml_es.learners import Learner, Params, build_learner, get_entry
from vsml_es.reporting import (
    Curves,
    Tuning,
    format_table,
    plot_curves,
    write_curves_csv,
    write_summary_csv,
    write_tuning_csv,
)
from vsml_es.tasks import (
    Data,
    EpisodeSource,
    build_task,
    load_metatest_task,
    split_size,
    task_at_size,
)

EVAL_BATCH = 16  # episodes per jitted call; bounds memory for large meta-tests
TUNING_SEED_OFFSET = 7919  # tuning streams never coincide with evaluation streams


@dataclass(frozen=True)
class Contender:
    """A learner and the parameters it is meta-tested with."""

    label: str
    learner: Learner
    params: Any


def meta_learned(config: Config, params: Params, name: str | None = None) -> Contender:
    """The meta-learned learner ``name`` (default ``model.learner``) with ES's parameters."""
    learner = build_learner(name or config.model.learner, config)
    return Contender(learner.describe(params), learner, params)


def eval_keys(seed: int, episodes: int) -> jax.Array:
    return episode_keys(jnp.int32(seed), jnp.int32(0), jnp.arange(episodes, dtype=jnp.int32))


@partial(jax.jit, static_argnames=("task", "learner"))
def _episode_batch(params: Params, keys: jax.Array, data: Data, task: EpisodeSource,
                   learner: Learner) -> tuple[jax.Array, jax.Array]:
    return jax.vmap(learner_episode, in_axes=(None, None, 0, None, None))(
        learner, params, keys, data, task
    )


def learner_curves(contender: Contender, task: EpisodeSource, data: Data, episodes: int,
                   seed: int) -> Curves:
    """Per-episode, per-step loss and accuracy of ``contender`` on the streams of ``seed``."""
    params = jax.tree.map(jnp.asarray, contender.params)
    keys = eval_keys(seed, episodes)
    losses, accs = [], []
    for start in range(0, keys.shape[0], EVAL_BATCH):
        loss, acc = _episode_batch(params, keys[start : start + EVAL_BATCH], data, task,
                                   contender.learner)
        losses.append(np.asarray(loss))
        accs.append(np.asarray(acc))
    return Curves(contender.label, task.name, np.concatenate(losses), np.concatenate(accs))


def _setting(params: Params) -> dict[str, float]:
    return {name: float(value) for name, value in params.items()}


def tune(learner: Learner, candidates: tuple[Params, ...], task: EpisodeSource, data: Data,
         episodes: int, seed: int) -> Tuning:
    """The candidate with the best mean online accuracy on the given (meta-training) streams."""
    trials = []
    for params in candidates:
        curves = learner_curves(Contender("", learner, params), task, data, episodes,
                                seed + TUNING_SEED_OFFSET)
        trials.append((_setting(params), float(curves.accuracy.mean())))
    best = max(trials, key=lambda trial: trial[1])[0]
    return Tuning(best, trials)


def tune_baselines(config: Config, task: EpisodeSource, data: Data, steps: int,
                   log: Report = report) -> dict[str, Tuning]:
    """Every ``metatest.baselines`` learner, tuned on ``steps``-step meta-training streams."""
    mt = config.metatest
    task = task.with_episode_length(steps)
    tuned = {}
    for name in mt.baselines:
        tuning = tune(build_learner(name, config), get_entry(name).candidates(config), task, data,
                      mt.sgd_tuning_episodes, mt.seed)
        tuned[name] = tuning
        if len(tuning.trials) > 1 and len(tuning.chosen) == 1:
            (key, value), = tuning.chosen.items()
            grid = [setting[key] for setting, _ in tuning.trials]
            if value in (min(grid), max(grid)):
                log(f"warning: the best {key} of baseline '{name}' ({value:g}) is at the edge "
                    f"of its grid ({', '.join(f'{v:g}' for v in grid)}); a wider grid may tune "
                    "it better.")
    return tuned


def tuned_contenders(config: Config, tuned: dict[str, Tuning]) -> list[Contender]:
    contenders = []
    for name, tuning in tuned.items():
        learner = build_learner(name, config)
        params = {k: jnp.asarray(v, jnp.float32) for k, v in tuning.chosen.items()}
        contenders.append(Contender(learner.describe(params), learner, params))
    return contenders


def run_metatest(
    contenders: list[Contender],
    config: Config,
    out_dir: Path,
    *,
    training: tuple[EpisodeSource, Data] | None = None,
    datasets: tuple[str, ...] | None = None,
    steps: int | None = None,
    episodes: int | None = None,
    num_features: int | None = None,
    log: Report = report,
) -> list[dict]:
    """Every contender and every tuned ``metatest.baselines`` learner on every meta-test
    dataset, on identical streams. ``training`` is the meta-training task and data that tuning
    draws from (built from ``config.task`` when not given).

    Writes ``summary.csv``, ``table.md``, ``tuning.csv`` and per dataset a curves CSV and PNG.
    """
    mt = config.metatest
    datasets = datasets or mt.datasets
    steps = steps or mt.steps
    episodes = episodes or mt.episodes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Every meta-test dataset loads (and fits the network) before any tuning or evaluation.
    tests = [(ref, *load_metatest_task(ref, config.task, mt, steps, num_features))
             for ref in datasets]
    # Baselines are tuned once per input size, on the meta-training streams at that size.
    sizes = {split_size(ref)[1] for ref in datasets}
    tuned_at: dict[tuple[int, int] | None, dict[str, Tuning]] = {}
    for size in sorted(sizes, key=lambda s: (s is not None, s)) if mt.baselines else ():
        if size is None:
            task, data = training if training is not None else build_task(config.task)
        else:
            task, data = build_task(task_at_size(config.task, size))
        tuned_at[size] = tune_baselines(config, task, data, steps)
    write_tuning_csv(out_dir / "tuning.csv", {
        name + ("" if size is None else f"@{size[0]}x{size[1]}"): tuning
        for size, tuned in tuned_at.items() for name, tuning in tuned.items()})
    summaries = []
    for ref, task, data in tests:
        size = split_size(ref)[1]
        fits: list[Contender] = []
        skipped: list[str] = []
        for c in contenders:  # at its own size, a dataset is only for size-free learners
            if size is None or c.learner.size_free:
                fits.append(c)
            else:
                skipped.append(c.label)
        if skipped:
            log(f"{ref}: skipping {', '.join(skipped)} (parameters tied to the training "
                "input size)")
        everyone = [*fits, *tuned_contenders(config, tuned_at.get(size, {}))]
        all_curves = [learner_curves(c, task, data, episodes, mt.seed) for c in everyone]
        stem = task.name.replace(":", "_")
        write_curves_csv(out_dir / f"curves_{stem}.csv", all_curves)
        plot_curves(out_dir / f"curves_{stem}.png", all_curves)
        summaries.extend(c.summary(mt.report_steps) for c in all_curves)
    write_summary_csv(out_dir / "summary.csv", summaries)
    (out_dir / "table.md").write_text(format_table(summaries) + "\n")
    return summaries

