"""Meta-training at several input sizes in one population (``task.input_sizes``).

The official invariance run (configs/invariances.yaml) kept MNIST at 28x28 or resized it to
14x14 or 32x32, one size per MPI worker, and each worker built its network for its own size:
VSML's parameters do not depend on the input size. Here a generation's episodes are split by
episode id over the sizes, and each size's members run through that size's own compiled
evaluation; the example data is loaded once and shared, since resizing happens per example on
the device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from vsml_es import preprocess as pre
from vsml_es.config import Config, PreprocessConfig, TaskConfig
from vsml_es.errors import ConfigError
from vsml_es.learners import build_learner
from vsml_es.tasks import (
    Data,
    EpisodeSource,
    MixtureTask,
    Task,
    TaskData,
    build_task,
    sized_tasks,
)

__all__ = ["MultiSizeTask", "TrainingTask", "build_training_task", "check_size_free",
           "member_groups", "single_size"]


@dataclass(frozen=True)
class MultiSizeTask:
    """The meta-training task at each of ``sizes`` (hashable, small: it travels in the
    evaluation spec). Not one episode stream: the evaluator gives every size its own members,
    and whatever reads a single stream (baseline tuning, the run's recorded input size) uses
    ``primary``, the first size, which also describes the task (name, outputs, features)."""

    tasks: tuple[EpisodeSource, ...]
    sizes: tuple[tuple[int, ...], ...]

    @property
    def primary(self) -> EpisodeSource:
        return self.tasks[0]

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def num_features(self) -> int:
        return self.primary.num_features

    @property
    def num_outputs(self) -> int:
        return self.primary.num_outputs

    @property
    def episode_length(self) -> int:
        return self.primary.episode_length

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.primary.input_shape

    @property
    def parts(self) -> tuple[Task, ...]:
        return self.primary.parts

    def size_index(self, episode_ids: np.ndarray) -> np.ndarray:
        """Which size each episode id is at: id mod the number of sizes, so antithetic
        partners (one id) share a size and every generation splits its ids evenly."""
        return np.asarray(episode_ids) % len(self.tasks)


TrainingTask = EpisodeSource | MultiSizeTask


def single_size(task: TrainingTask) -> EpisodeSource:
    """The one stream of ``task``: itself, or a multi-size task's first size."""
    return task.primary if isinstance(task, MultiSizeTask) else task


def member_groups(task: TrainingTask,
                  episode_ids: np.ndarray) -> list[tuple[EpisodeSource, np.ndarray]]:
    """(stream, member indices) for every input size that some of these members are at, in
    member order within each; one group of all members for a single-size task."""
    if not isinstance(task, MultiSizeTask):
        return [(task, np.arange(len(episode_ids)))]
    which = task.size_index(episode_ids)
    return [(t, np.flatnonzero(which == i)) for i, t in enumerate(task.tasks)
            if np.any(which == i)]


def build_training_task(config: TaskConfig) -> tuple[TrainingTask, Data]:
    """The meta-training task of ``config``: ``tasks.build_task``'s, or with ``input_sizes``
    that task at every size over the same loaded data."""
    primary, data = build_task(config)
    if not config.input_sizes:
        return primary, data
    others = tuple(_at_size(primary, data, cfg.preprocess) for cfg in sized_tasks(config)[1:])
    return MultiSizeTask((primary, *others), tuple(config.input_sizes)), data


def _at_size(task: EpisodeSource, data: Data, target: PreprocessConfig) -> EpisodeSource:
    """``task`` with the resize of ``target`` (its other preprocessing, class filters
    included, kept); the stored examples are unchanged, so ``data`` still serves it."""
    if isinstance(task, MixtureTask):
        assert not isinstance(data, TaskData)
        parts = tuple(_at_size(p, d, target) for p, d in zip(task.parts, data, strict=True))
        return dataclasses.replace(task, parts=parts,
                                   preprocess=_resize_of(task.preprocess, target))
    assert isinstance(task, Task) and isinstance(data, TaskData)
    cfg = _resize_of(task.preprocess, target)
    name = task.name.partition(":")[0]
    shape = tuple(pre.output_shape(name, tuple(data.x.shape[1:]), cfg))
    return dataclasses.replace(task, preprocess=cfg, input_shape=shape,
                               num_features=math.prod(shape))


def _resize_of(cfg: PreprocessConfig, target: PreprocessConfig) -> PreprocessConfig:
    return dataclasses.replace(cfg, resize=target.resize, signal_length=target.signal_length)


def check_size_free(config: Config, learners: tuple[str, ...], path: str) -> None:
    """With ``task.input_sizes`` every learner meta-trained on the task must run at any input
    size: one set of parameters serves all sizes (checked before any work)."""
    if not config.task.input_sizes:
        return
    tied = [name for name in learners if not build_learner(name, config).size_free]
    if tied:
        raise ConfigError(
            f"Config key 'task.input_sizes' meta-trains one set of parameters at several input "
            f"sizes, but {path} names {', '.join(tied)}, whose parameters depend on the input "
            "size. Use a size-free learner (vsml), or drop task.input_sizes."
        )
