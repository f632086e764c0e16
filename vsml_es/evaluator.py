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
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vsml_es.config import Config
from vsml_es.episodes import population_fitness_on
from vsml_es.imitation import Imitation, chunk_gradients
from vsml_es.learners import Learner, build_learner
from vsml_es.multisize import TrainingTask, build_training_task, member_groups, single_size
from vsml_es.online import Missing, OnlinePool, OnlineSpec, WindowResult
from vsml_es.tasks import Data


class Evaluation(NamedTuple):
    fitness: np.ndarray  # [P] float32, lower is better (mean online loss)
    accuracy: np.ndarray  # [P] float32, mean online accuracy over the episode


@dataclass(frozen=True)
class AskRecipe:
    """How the driver drew a generation's population: ``algorithm.ask(key, state, params)``.

    An evaluator that offers ``evaluate_asked`` may send this (O(parameters)) instead of the
    members (O(population x parameters)) and let its workers redraw them.
    """

    algorithm: Any
    key: jax.Array
    state: Any
    params: Any


class GradientChunk(NamedTuple):
    """One chunk of a gradient method's batch: episode ids, weights (0: padding) and the
    chunk's carried episodes (or None)."""

    episode_ids: np.ndarray
    weights: np.ndarray
    carries: Any


class GradientResult(NamedTuple):
    """Sums over one chunk: meta-loss, accuracy, gradient; and its carried episodes after."""

    loss: Any
    accuracy: Any
    grads: Any
    carries: Any


class Evaluator(Protocol):
    """Where a method's work runs, one call per generation: a population (pytree with leading
    axis P) of full episodes, a window of every online-ES particle, or a gradient method's
    chunks of episodes.

    Optional: ``evaluate_asked(recipe, population, generation, episode_ids)``, the same
    evaluation given also the :class:`AskRecipe` the population came from.
    """

    def evaluate(self, population: Any, generation: int, episode_ids: np.ndarray) -> Evaluation:
        ...

    def windows(self, online: OnlineSpec, generation: int, theta: np.ndarray,
                history: np.ndarray) -> WindowResult:
        """One window of every particle (``vsml_es.online``); ``history`` rebuilds lost
        states and need not travel when nothing was lost."""
        ...

    def gradients(self, method: Imitation, params: Any, generation: int,
                  chunks: list[GradientChunk]) -> list[GradientResult]:
        """Each chunk's sums (``imitation.chunk_gradients``), in chunk order."""
        ...

    def status(self) -> dict[str, Any]:
        """Counters for the progress bar (workers alive, shards in flight, ...)."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class EvalSpec:
    """Everything needed to rebuild the evaluation function anywhere (hashable, small)."""

    learner: Learner
    task: TrainingTask  # one stream, or one per input size (task.input_sizes)
    fitness_mode: str
    seed: int
    chunk: int


def make_eval_spec(config: Config, task: TrainingTask) -> EvalSpec:
    """The evaluation of ``model.learner`` on an already built meta-training task."""
    return EvalSpec(build_learner(config.model.learner, config), task, config.task.fitness,
                    config.training.seed, config.training.eval_chunk)


def build_eval_spec(config: Config) -> tuple[EvalSpec, Data]:
    """Task (one dataset or a mixture, preprocessed) and evaluation spec, from scratch."""
    task, data = build_training_task(config.task)
    return make_eval_spec(config, task), data


def slice_members(population: Any, index: np.ndarray) -> Any:
    return jax.tree.map(lambda a: np.asarray(a)[index], population)


def evaluate_members(
    spec: EvalSpec,
    data: Data,
    population: Any,
    generation: int,
    episode_ids: np.ndarray,
    devices: tuple[jax.Device, ...] | None = None,
) -> Evaluation:
    """Evaluate any number of members in fixed-size chunks (pure; used by every evaluator).

    Chunks run one per device in parallel (default: all local devices, e.g. the GPUs, or the
    host devices of ``vsml_es.host_devices``). Every device runs the same single-chunk
    computation, so fitness does not depend on the device count. With several input sizes
    (``task.input_sizes``) each size's members form chunks of their own, so a member's
    fitness depends only on its episode id, not on which members share its shard.
    """
    population = jax.tree.map(np.asarray, population)
    episode_ids = np.asarray(episode_ids, dtype=np.int32)
    devices = tuple(devices or jax.local_devices())
    fitness = np.zeros(episode_ids.shape[0], np.float32)
    accuracy = np.zeros(episode_ids.shape[0], np.float32)
    pending = []
    for task, members in member_groups(spec.task, episode_ids):
        m = len(members)
        # Pad the last chunk with copies of the last member.
        chunks = [members[np.minimum(np.arange(s, s + spec.chunk), m - 1)]
                  for s in range(0, m, spec.chunk)]
        for first in range(0, len(chunks), len(devices)):
            group = chunks[first : first + len(devices)]
            on = devices[: len(group)]
            index = np.concatenate(group)
            fn = population_fitness_on(on, task, spec.learner, spec.fitness_mode)
            pending.append((index, fn(  # dispatched asynchronously: groups queue up
                slice_members(population, index),
                np.int32(spec.seed),
                np.int32(generation),
                episode_ids[index],
                replicated(data, on),
            )))
    for index, (f, a) in pending:  # padding copies write their member's own value again
        fitness[index] = np.asarray(f)
        accuracy[index] = np.asarray(a)
    return Evaluation(fitness, accuracy)


def online_pool(spec: EvalSpec, online: OnlineSpec, particles: np.ndarray) -> OnlinePool:
    """The pool of ``particles``' inner states on this process (a worker's or the driver's)."""
    return OnlinePool(spec.learner, single_size(spec.task), online, particles)


def gradient_chunk(method: Imitation, params: Any, generation: int, chunk: GradientChunk,
                   data: Data) -> GradientResult:
    """One chunk's sums, brought to host memory (the same on a worker and in-process)."""
    out = chunk_gradients(method, params, np.int32(generation), chunk.episode_ids,
                          chunk.weights, chunk.carries, data)
    return GradientResult(*jax.tree.map(_to_host, out))


def _to_host(x: jax.Array) -> Any:
    """numpy for the wire, except PRNG keys (carried episodes), which stay typed."""
    return x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else np.asarray(x)


_REPLICAS: dict[tuple[Any, ...], tuple[Data, Data]] = {}


def replicated(data: Data, devices: tuple[jax.Device, ...]) -> Data:
    """``data`` on every device, copied once per (data, devices) rather than per generation."""
    key = (*(id(leaf) for leaf in jax.tree.leaves(data)), devices)
    if key not in _REPLICAS:
        if len(_REPLICAS) >= 8:  # a few datasets per process at most; forget the oldest
            _REPLICAS.pop(next(iter(_REPLICAS)))
        sharding = NamedSharding(Mesh(np.asarray(devices), ("members",)), PartitionSpec())
        # The original is kept alive with its copy, so its id() cannot be reused meanwhile.
        _REPLICAS[key] = (data, jax.device_put(data, sharding))
    return _REPLICAS[key][1]


class LocalEvaluator:
    """In-process evaluation on this machine's JAX devices."""

    def __init__(self, spec: EvalSpec, data: Data):
        self.spec = spec
        self.data = data
        self._pool: OnlinePool | None = None

    def evaluate(self, population: Any, generation: int, episode_ids: np.ndarray) -> Evaluation:
        return evaluate_members(self.spec, self.data, population, generation, episode_ids)

    def windows(self, online: OnlineSpec, generation: int, theta: np.ndarray,
                history: np.ndarray) -> WindowResult:
        if self._pool is None or self._pool.online != online:
            self._pool = online_pool(self.spec, online, np.arange(online.particles))
        result = self._pool.run(generation, theta, history, self.data)
        assert not isinstance(result, Missing)  # given the history, a pool rebuilds
        return result

    def gradients(self, method: Imitation, params: Any, generation: int,
                  chunks: list[GradientChunk]) -> list[GradientResult]:
        return [gradient_chunk(method, params, generation, chunk, self.data)
                for chunk in chunks]

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
