"""Introspection of a meta-learned VSML learner: what its output units do during an episode,
and how quickly a class seen once is predicted again (the paper's "fast association").

Why both: the learning curve averages over classes, so it cannot tell a learner that
associates an input with its label after one example from one that needs many. Counting, per
episode, the k-th time each label occurs and scoring the predictions made at that moment
(before the label is revealed) separates them: on the first occurrence of a freshly permuted
label no learner can beat guessing among the labels not yet seen; what comes after is learning.

The per-step trace runs the learner's own ``step`` through the same episode keys, key split and
output masking as :func:`vsml_es.episodes.learner_episode`, so its predictions are exactly those
that the meta-test scores; only the summaries of the output layer's states are added.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import Config
from vsml_es.episodes import masked_logits, start_episode
from vsml_es.errors import Report, report
from vsml_es.introspect_report import (
    OCCURRENCE_CSV,
    OCCURRENCE_PNG,
    TRACE_CSV,
    OccurrenceCurve,
    plot_occurrence,
    write_occurrence_csv,
    write_trace_csv,
)
from vsml_es.learners.base import Learner, Params
from vsml_es.metatest import (
    EVAL_BATCH,
    eval_keys,
    learner_curves,
    meta_learned,
    tune_baselines,
    tuned_contenders,
)
from vsml_es.reporting import write_tuning_csv
from vsml_es.tasks import (
    Data,
    EpisodeSource,
    build_task,
    load_metatest_task,
    split_size,
    task_at_size,
)


class Trace(NamedTuple):
    """One or more episodes, step by step (leading axes: [episodes,] steps)."""

    labels: jax.Array  # [T] int: the label of each step's example (after permutation)
    logits: jax.Array  # [T, O]: the prediction, made before the label was seen
    h_rms: jax.Array  # [T, O]: RMS of h over each output unit's incoming connections
    c_rms: jax.Array  # [T, O]: RMS of the cell states c over the same connections
    dc_rms: jax.Array  # [T, O]: RMS of the change of c during this step (what it learned)


def _output_layer(state: object) -> tuple[jax.Array, jax.Array]:
    """(h, c) of the last VSML layer. Both state layouts (public [n_in, n_out, s] and fast
    [s, n_out, n_in]) keep the output units on axis 1."""
    layer = state.layers[-1]  # type: ignore[attr-defined]
    return layer.h, layer.c


def _rms_per_output(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(a), axis=(0, 2)))


def trace_episode(learner: Learner, params: Params, key: jax.Array, data: Data,
                  task: EpisodeSource) -> Trace:
    """The episode of ``key`` (an evaluation key, as the meta-test draws it), step by step."""
    init, step, k_learner, spec, live = start_episode(learner, params, key, task)

    def body(state: object, t: jax.Array) -> tuple[object, tuple[jax.Array, ...]]:
        x, y = task.example(data, spec, t)
        _, c_before = _output_layer(state)
        state, logits = step(state, x, y)
        h, c = _output_layer(state)
        return state, (y, masked_logits(logits, live), _rms_per_output(h), _rms_per_output(c),
                       _rms_per_output(c - c_before))

    _, records = jax.lax.scan(body, init(k_learner), jnp.arange(task.episode_length))
    return Trace(*records)


@partial(jax.jit, static_argnames=("task", "learner"))
def trace_episodes(params: Params, keys: jax.Array, data: Data, task: EpisodeSource,
                   learner: Learner) -> Trace:
    """:func:`trace_episode` for a batch of keys (leading axis: episodes)."""
    return jax.vmap(trace_episode, in_axes=(None, None, 0, None, None))(
        learner, params, keys, data, task)


def occurrence_index(labels: np.ndarray) -> np.ndarray:
    """[E, T] labels -> [E, T] k: this step shows its label for the k-th time (1-based)."""
    labels = np.asarray(labels)
    occ = np.zeros(labels.shape, dtype=np.int64)
    for e in range(labels.shape[0]):
        seen: dict[int, int] = {}
        for t, y in enumerate(labels[e].tolist()):
            seen[y] = seen.get(y, 0) + 1
            occ[e, t] = seen[y]
    return occ


def accuracy_by_occurrence(occurrence: np.ndarray, correct: np.ndarray,
                           max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the predictions made at the k-th occurrence of a label, k = 1..max_k,
    pooled over episodes and labels; and how many predictions each holds (0: NaN accuracy)."""
    acc = np.full(max_k, np.nan)
    counts = np.zeros(max_k, dtype=np.int64)
    for k in range(1, max_k + 1):
        hits = np.asarray(correct)[occurrence == k]
        counts[k - 1] = hits.size
        if hits.size:
            acc[k - 1] = float(hits.mean())
    return acc, counts


MAX_OCCURRENCE = 10  # occurrences k = 1..10 are scored (later ones look alike)


def introspect_learner(config: Config, params: Params, num_features: int, out: Path,
                       log: Report = report) -> dict[str, OccurrenceCurve]:
    """Trace the meta-learned learner of ``config`` on ``metatest.datasets[0]`` and score it
    beside the tuned ``metatest.baselines`` by occurrence of a label; write the files of
    :mod:`vsml_es.introspect_report` into ``out``. ``num_features``: the network's input size
    (a dataset with its own '@HxW' size keeps that instead). Inputs are checked by the caller."""
    mt = config.metatest
    ref = mt.datasets[0]
    size = split_size(ref)[1]
    task, data = load_metatest_task(ref, config.task, mt, mt.steps, num_features)
    training = task_at_size(config.task, size) if size is not None else config.task
    train_task, train_data = build_task(training)
    tuned = tune_baselines(config, train_task, train_data, mt.steps, log)
    vsml = meta_learned(config, params)
    keys = eval_keys(mt.seed, mt.episodes)
    device_params = jax.tree.map(jnp.asarray, params)
    traces = [trace_episodes(device_params, keys[i:i + EVAL_BATCH], data, task, vsml.learner)
              for i in range(0, mt.episodes, EVAL_BATCH)]
    # With per-dataset outputs the dead outputs are out of every prediction: not shown.
    shown = (task.dataset_classes if vsml.learner.masks_outputs
             and getattr(task, "mask_outputs", False) else task.num_outputs)
    trace = Trace(*(np.concatenate([np.asarray(getattr(t, f)) for t in traces])
                    for f in Trace._fields))
    trace = trace._replace(**{f: getattr(trace, f)[..., :shown]
                              for f in ("logits", "h_rms", "c_rms", "dc_rms")})
    occurrence = occurrence_index(trace.labels)
    correct = trace.logits.argmax(axis=-1) == trace.labels
    curves = {"vsml": OccurrenceCurve(
        vsml.label, *accuracy_by_occurrence(occurrence, correct, MAX_OCCURRENCE))}
    for name, contender in zip(tuned, tuned_contenders(config, tuned), strict=True):
        accuracy = learner_curves(contender, task, data, mt.episodes, mt.seed).accuracy
        curves[name] = OccurrenceCurve(
            contender.label, *accuracy_by_occurrence(occurrence, accuracy > 0.5,
                                                     MAX_OCCURRENCE))
    out.mkdir(parents=True, exist_ok=True)
    write_tuning_csv(out / "tuning.csv", tuned)
    write_trace_csv(out / TRACE_CSV, trace.labels[0], trace.logits[0], occurrence[0],
                    trace.h_rms[0], trace.c_rms[0], trace.dc_rms[0])
    write_occurrence_csv(out / OCCURRENCE_CSV, curves)
    plot_occurrence(out / OCCURRENCE_PNG, curves, 1.0 / task.dataset_classes,
                    f"How fast a label seen once is predicted again: {task.name}, "
                    f"{mt.episodes} episodes of {mt.steps} steps")
    return curves
