"""Online learning episodes for any learner, and the VSML population fitness.

A learner is a pair of pure functions: ``init(key) -> state`` and
``step(state, x, y) -> (state, logits)`` where ``logits`` is the prediction made before ``y``
was revealed. VSML and the baselines run through the same ``online_episode``, so they see
identical streams.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from vsml_es import vsml
from vsml_es.config import ModelConfig
from vsml_es.tasks import Task, TaskData

InitFn = Callable[[jax.Array], Any]
StepFn = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]


def episode_keys(seed: jax.Array, generation: jax.Array, episode_ids: jax.Array) -> jax.Array:
    """Episode data is a pure function of (run seed, generation, episode id)."""
    gen_key = jax.random.fold_in(jax.random.key(seed), generation)
    return jax.vmap(lambda i: jax.random.fold_in(gen_key, i))(episode_ids)


def online_episode(
    init: InitFn, step: StepFn, key: jax.Array, data: TaskData, task: Task
) -> tuple[jax.Array, jax.Array]:
    """Per-step cross-entropy and accuracy of predictions made before each label was seen."""
    k_spec, k_learner = jax.random.split(key)
    spec = task.episode(k_spec)

    def body(state: Any, t: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        x, y = task.example(data, spec, t)
        state, logits = step(state, x, y)
        loss = -jax.nn.log_softmax(logits)[y]
        correct = (jnp.argmax(logits) == y).astype(jnp.float32)
        return state, (loss, correct)

    _, (losses, correct) = jax.lax.scan(
        body, init(k_learner), jnp.arange(task.episode_length)
    )
    return losses, correct


def vsml_learner(
    params: vsml.Params, model: ModelConfig, task: Task, layer_fn: vsml.LayerFn | None = None
) -> tuple[InitFn, StepFn]:
    """VSML as a learner. By default the states stay in the fast layout for the whole episode
    (one transpose at the start, none per step); ``layer_fn`` swaps in another formulation
    of ``vsml.layer_ticks`` (e.g. the reference oracle) on the public layout."""
    sizes = vsml.layer_sizes(model, task.num_features, task.num_outputs)
    fast = layer_fn is None
    if fast:
        layer_fn = vsml.fast_layer_ticks

    def init(key: jax.Array) -> vsml.NetState:
        net = vsml.init_net_state(key, model, sizes)
        return vsml.net_to_fast(net) if fast else net

    def step(net: vsml.NetState, x: jax.Array, y: jax.Array) -> tuple[vsml.NetState, jax.Array]:
        return vsml.learn_step(params, net, x, y, model, layer_fn)

    return init, step


def vsml_episode(
    params: vsml.Params,
    key: jax.Array,
    data: TaskData,
    task: Task,
    model: ModelConfig,
    layer_fn: vsml.LayerFn | None = None,
) -> tuple[jax.Array, jax.Array]:
    init, step = vsml_learner(params, model, task, layer_fn)
    return online_episode(init, step, key, data, task)


def learner_episode(
    params: Any, key: jax.Array, data: TaskData, task: Task, model: ModelConfig
) -> tuple[jax.Array, jax.Array]:
    """One episode of whichever learner ``model.learner`` names (VSML keeps its own path)."""
    if model.learner == "vsml":
        return vsml_episode(params, key, data, task, model)
    from vsml_es.learners import make_learner  # the registry imports this module

    init, step = make_learner(params, model, task)
    return online_episode(init, step, key, data, task)


def fitness_from_losses(losses: jax.Array, mode: str) -> jax.Array:
    """ES minimizes this: mean online loss (default) or the last step's loss."""
    if mode == "last_loss":
        return losses[..., -1]
    return jnp.mean(losses, axis=-1)


def _population_fitness(
    params_batch: vsml.Params,
    seed: jax.Array,
    generation: jax.Array,
    episode_ids: jax.Array,
    data: TaskData,
    task: Task,
    model: ModelConfig,
    fitness_mode: str,
) -> tuple[jax.Array, jax.Array]:
    """(fitness, mean accuracy) for a batch of members, vmapped over members."""
    keys = episode_keys(seed, generation, episode_ids)
    losses, correct = jax.vmap(learner_episode, in_axes=(0, 0, None, None, None))(
        params_batch, keys, data, task, model
    )
    return fitness_from_losses(losses, fitness_mode), jnp.mean(correct, axis=-1)


population_fitness = partial(jax.jit, static_argnames=("task", "model", "fitness_mode"))(
    _population_fitness
)


@lru_cache(maxsize=32)
def population_fitness_on(
    devices: tuple[jax.Device, ...], task: Task, model: ModelConfig, fitness_mode: str
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``population_fitness`` for ``len(devices)`` chunks of members at once, one per device.

    Each device runs exactly the single-chunk computation on its own chunk (``shard_map``, no
    communication), so a member's fitness does not depend on how many devices share the work.
    Built once per (devices, task, model, mode) and reused by every generation: no recompiles.
    Call as ``fn(params_batch, seed, generation, episode_ids, data)`` with the member axis a
    multiple of the device count.
    """
    mesh = Mesh(np.asarray(devices), ("members",))

    def body(
        params_batch: vsml.Params,
        seed: jax.Array,
        generation: jax.Array,
        episode_ids: jax.Array,
        data: TaskData,
    ) -> tuple[jax.Array, jax.Array]:
        return _population_fitness(
            params_batch, seed, generation, episode_ids, data, task, model, fitness_mode
        )

    members, shared = PartitionSpec("members"), PartitionSpec()
    sharded = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(members, shared, shared, members, shared),
        out_specs=members,
        check_vma=False,  # the episode scan's carry starts replicated and becomes per-member
    )
    return jax.jit(sharded)
