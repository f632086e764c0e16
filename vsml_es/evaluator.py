"""Population evaluation behind one small interface, so the trainer does not care where it runs.

Members are always evaluated in chunks of exactly ``eval_chunk`` (the last chunk padded), so
every member goes through the same compiled computation with the same shapes whether the
population is evaluated in-process, in one Ray shard or split over many: fitness is identical
bit for bit, whatever the sharding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import Config, ModelConfig
from vsml_es.episodes import population_fitness
from vsml_es.tasks import Task, TaskData, build_task


class Evaluation(NamedTuple):
    fitness: np.ndarray  # [P] float32, lower is better (mean online loss)
    accuracy: np.ndarray  # [P] float32, mean online accuracy over the episode


class Evaluator(Protocol):
    """Evaluates a population (pytree with leading axis P) for one generation."""

    def evaluate(self, population: Any, generation: int, episode_ids: np.ndarray) -> Evaluation:
        ...

    def status(self) -> dict[str, Any]:
        """Counters for the progress bar (workers alive, shards in flight, ...)."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class EvalSpec:
    """Everything needed to rebuild the evaluation function anywhere (hashable, small)."""

    model: ModelConfig
    task: Task
    fitness_mode: str
    seed: int
    chunk: int


def build_eval_spec(config: Config) -> tuple[EvalSpec, TaskData]:
    t = config.task
    task, data = build_task(t)  # one dataset or a mixture, preprocessed
    spec = EvalSpec(config.model, task, t.fitness, config.training.seed, config.training.eval_chunk)
    return spec, data


def slice_members(population: Any, index: np.ndarray) -> Any:
    return jax.tree.map(lambda a: np.asarray(a)[index], population)


def evaluate_members(
    spec: EvalSpec, data: TaskData, population: Any, generation: int, episode_ids: np.ndarray
) -> Evaluation:
    """Evaluate any number of members in fixed-size chunks (pure; used by every evaluator)."""
    population = jax.tree.map(np.asarray, population)
    episode_ids = np.asarray(episode_ids, dtype=np.int32)
    n = episode_ids.shape[0]
    fitness, accuracy = [], []
    for start in range(0, n, spec.chunk):
        index = np.arange(start, start + spec.chunk)
        index = np.minimum(index, n - 1)  # pad the last chunk with copies of the last member
        f, a = population_fitness(
            slice_members(population, index),
            jnp.int32(spec.seed),
            jnp.int32(generation),
            jnp.asarray(episode_ids[index]),
            data,
            spec.task,
            spec.model,
            spec.fitness_mode,
        )
        keep = min(spec.chunk, n - start)
        fitness.append(np.asarray(f)[:keep])
        accuracy.append(np.asarray(a)[:keep])
    return Evaluation(np.concatenate(fitness), np.concatenate(accuracy))


class LocalEvaluator:
    """In-process evaluation on this machine's JAX devices."""

    def __init__(self, spec: EvalSpec, data: TaskData):
        self.spec = spec
        self.data = data

    def evaluate(self, population: Any, generation: int, episode_ids: np.ndarray) -> Evaluation:
        return evaluate_members(self.spec, self.data, population, generation, episode_ids)

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
