"""The Ray actor that evaluates shards of a population (Ray itself is imported lazily)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from vsml_es.distributed.transfer import Drawer, Wire, digest
from vsml_es.evaluator import (
    EvalSpec,
    GradientChunk,
    GradientResult,
    evaluate_members,
    gradient_chunk,
    online_pool,
    slice_members,
)
from vsml_es.online import Missing, OnlinePool, OnlineSpec, WindowResult
from vsml_es.tasks import Data


class ShardWorker:
    """Ray actor: keeps the dataset on its devices and evaluates shards of the population.

    The dataset reference comes with each call, wrapped in a list so Ray passes the reference
    rather than the data: the actor loads it once, and again after Ray restarts it. (Ray warns
    about, and cannot always restart, actors whose constructor arguments live in the store.)
    The ES strategy (a ``Drawer``) comes the same way, for shards sent as a recipe.

    ``slowdown`` > 1 makes this worker that many times slower (it sleeps after each shard):
    a real straggler for the backup-task tests and the scale benchmark.
    """

    def __init__(self, spec: EvalSpec, slowdown: float = 1.0):
        self.spec = spec
        self.slowdown = slowdown
        self.data: Data | None = None
        self._drawn: tuple[Any, Drawer] | None = None  # (reference, drawer)
        # Online ES: the inner states of the particle blocks this actor owns, by first particle
        self._pools: dict[int, OnlinePool] = {}
        self._method: tuple[Any, Any] | None = None  # (reference, gradient method)
        self._online: tuple[Any, OnlineSpec] | None = None  # (reference, online settings)

    def _load(self, data_ref: list[Any]) -> Data:
        if self.data is None:
            import jax
            import jax.numpy as jnp
            import ray

            self.data = jax.tree.map(jnp.array, ray.get(data_ref[0]))  # a private copy
        return self.data

    def _drawer(self, drawer_ref: list[Any]) -> Drawer:
        """The run's strategy, fetched once (its jitted ask then compiles once here)."""
        import ray

        if self._drawn is None or self._drawn[0] != drawer_ref[0]:
            self._drawn = (drawer_ref[0], ray.get(drawer_ref[0]))
        return self._drawn[1]

    def ping(self, data_ref: list[Any]) -> dict[str, Any]:
        """Where this actor runs; answered once the actor is (re)started and holds the data."""
        import jax
        import ray

        self._load(data_ref)
        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": context.get_node_id(), "devices": [str(d) for d in jax.local_devices()]}

    def evaluate(
        self, data_ref: list[Any], population: Any, generation: int, episode_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        data = self._load(data_ref)
        result = evaluate_members(self.spec, data, population, generation, episode_ids)
        self._lag(start)
        return result.fitness, result.accuracy

    def evaluate_recipe(
        self, data_ref: list[Any], drawer_ref: list[Any], recipe: Wire,
        members: np.ndarray, generation: int, episode_ids: np.ndarray, verify: bool,
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Redraw the population from ``recipe`` and evaluate ``members`` of it; with
        ``verify``, also return the digest of those members for the driver to compare."""
        start = time.perf_counter()
        data = self._load(data_ref)
        population = slice_members(self._drawer(drawer_ref).draw(recipe), members)
        result = evaluate_members(self.spec, data, population, generation, episode_ids)
        self._lag(start)
        return result.fitness, result.accuracy, digest(population) if verify else ""

    def window(self, data_ref: list[Any], online_ref: list[Any], first: int, count: int,
               generation: int, theta: np.ndarray,
               history: np.ndarray | None) -> WindowResult | Missing:
        """One window of particles first .. first + count - 1, from the states kept here;
        Missing when they are not here and ``history`` (to rebuild them) was not sent."""
        import ray

        start = time.perf_counter()
        data = self._load(data_ref)
        if self._online is None or self._online[0] != online_ref[0]:
            self._online = (online_ref[0], ray.get(online_ref[0]))
        online: OnlineSpec = self._online[1]
        pool = self._pools.get(first)
        if pool is None or pool.online != online or len(pool.particles) != count:
            if pool is not None and pool.online != online:
                self._pools.clear()  # another run's states
            pool = self._pools[first] = online_pool(self.spec, online,
                                                    np.arange(first, first + count))
        result = pool.run(generation, theta, history, data)
        self._lag(start)
        return result

    def gradients(self, data_ref: list[Any], method_ref: list[Any], params: Any,
                  generation: int, chunk: GradientChunk) -> GradientResult:
        """One chunk of a gradient method's batch: its sums of loss, accuracy, gradient."""
        import ray

        start = time.perf_counter()
        data = self._load(data_ref)
        if self._method is None or self._method[0] != method_ref[0]:
            self._method = (method_ref[0], ray.get(method_ref[0]))
        result = gradient_chunk(self._method[1], params, generation, chunk, data)
        self._lag(start)
        return result

    def _lag(self, start: float) -> None:
        if self.slowdown > 1:
            time.sleep((self.slowdown - 1) * (time.perf_counter() - start))
