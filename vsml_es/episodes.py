"""Online learning episodes for any learner, and the population fitness that ES minimizes.

Every learner (``vsml_es.learners``) runs through the same ``online_episode``, so all of them
see identical streams: VSML under ES, the other meta-learners, and the tuned optimizers alike.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from vsml_es import streams
from vsml_es.learners.base import InitFn, Learner, Params, StepFn
from vsml_es.streams import stream_key
from vsml_es.tasks import Data, EpisodeSource


def episode_keys(seed: jax.Array, generation: jax.Array, episode_ids: jax.Array) -> jax.Array:
    """Episode data is a pure function of (run seed, generation, episode id)."""
    gen_key = jax.random.fold_in(stream_key(seed, streams.EPISODES), generation)
    return jax.vmap(lambda i: jax.random.fold_in(gen_key, i))(episode_ids)


def online_episode(
    init: InitFn, step: StepFn, key: jax.Array, data: Data, task: EpisodeSource
) -> tuple[jax.Array, jax.Array]:
    """Per-step cross-entropy and accuracy of predictions made before each label was seen."""
    k_spec, k_learner = jax.random.split(key)
    return run_online(init, step, k_learner, task.episode(k_spec), data, task)


def live_outputs(task: EpisodeSource, spec: Any) -> jax.Array | None:
    """How many outputs this episode's dataset uses (task.per_dataset_outputs), or None when
    every output is live. Task sources without the method (test streams) use them all."""
    method = getattr(task, "live_outputs", None)
    return None if method is None else method(spec)


def masked_logits(logits: jax.Array, live: jax.Array | None) -> jax.Array:
    """Dead outputs (index >= live) at -inf: out of the softmax, the loss and the argmax."""
    if live is None:
        return logits
    return jnp.where(jnp.arange(logits.shape[-1]) < live, logits, -jnp.inf)


def run_online(
    init: InitFn, step: StepFn, k_learner: jax.Array, spec: Any, data: Data,
    task: EpisodeSource, live: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``online_episode`` for a drawn episode ``spec``; ``live`` masks the dead outputs out of
    the loss and the accuracy."""

    def body(state: Any, t: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        x, y = task.example(data, spec, t)
        state, logits = step(state, x, y)
        logits = masked_logits(logits, live)
        loss = -jax.nn.log_softmax(logits)[y]
        correct = (jnp.argmax(logits) == y).astype(jnp.float32)
        return state, (loss, correct)

    _, (losses, correct) = jax.lax.scan(
        body, init(k_learner), jnp.arange(task.episode_length)
    )
    return losses, correct


def start_episode(
    learner: Learner, params: Params, key: jax.Array, task: EpisodeSource
) -> tuple[InitFn, StepFn, jax.Array, Any, jax.Array | None]:
    """(init, step, learner key, episode spec, live outputs) of the episode of ``key``: one
    place decides how an episode's keys split and who sees masked outputs, so a trace of an
    episode (``vsml_es.introspect``) is the episode the meta-test scored.

    With per-dataset outputs a learner that masks (``Learner.masks_outputs``) gets the live
    output count and the episode's loss and accuracy ignore the dead outputs; any other
    learner sees the padded outputs (the official code padded the baselines' outputs).
    """
    k_spec, k_learner = jax.random.split(key)
    spec = task.episode(k_spec)
    live = episode_live_outputs(learner, task, spec)
    init, step = learner.make_for(params, task, live)
    return init, step, k_learner, spec, live


def episode_live_outputs(learner: Learner, task: EpisodeSource, spec: Any) -> jax.Array | None:
    """The live output count ``learner`` gets for episode ``spec``: None (all outputs) unless
    the task masks per dataset and the learner can mask (``Learner.masks_outputs``)."""
    return live_outputs(task, spec) if learner.masks_outputs else None


def learner_episode(
    learner: Learner, params: Params, key: jax.Array, data: Data, task: EpisodeSource
) -> tuple[jax.Array, jax.Array]:
    """One online episode of ``learner`` with ``params`` on the task's stream for ``key``."""
    init, step, k_learner, spec, live = start_episode(learner, params, key, task)
    return run_online(init, step, k_learner, spec, data, task, live)


def fitness_from_losses(losses: jax.Array, mode: str) -> jax.Array:
    """ES minimizes this: mean online loss (default) or the last step's loss."""
    if mode == "last_loss":
        return losses[..., -1]
    return jnp.mean(losses, axis=-1)


def _population_fitness(
    params_batch: Params,
    seed: jax.Array,
    generation: jax.Array,
    episode_ids: jax.Array,
    data: Data,
    task: EpisodeSource,
    learner: Learner,
    fitness_mode: str,
) -> tuple[jax.Array, jax.Array]:
    """(fitness, mean accuracy) for a batch of members, vmapped over members."""
    keys = episode_keys(seed, generation, episode_ids)
    losses, correct = jax.vmap(learner_episode, in_axes=(None, 0, 0, None, None))(
        learner, params_batch, keys, data, task
    )
    return fitness_from_losses(losses, fitness_mode), jnp.mean(correct, axis=-1)


population_fitness = partial(jax.jit, static_argnames=("task", "learner", "fitness_mode"))(
    _population_fitness
)


@lru_cache(maxsize=32)
def population_fitness_on(
    devices: tuple[jax.Device, ...], task: EpisodeSource, learner: Learner, fitness_mode: str
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """``population_fitness`` for ``len(devices)`` chunks of members at once, one per device.

    Each device runs exactly the single-chunk computation on its own chunk (``shard_map``, no
    communication), so a member's fitness does not depend on how many devices share the work.
    Built once per (devices, task, learner, mode) and reused by every generation: no recompiles.
    Call as ``fn(params_batch, seed, generation, episode_ids, data)`` with the member axis a
    multiple of the device count.
    """
    mesh = Mesh(np.asarray(devices), ("members",))

    def body(
        params_batch: Params,
        seed: jax.Array,
        generation: jax.Array,
        episode_ids: jax.Array,
        data: Data,
    ) -> tuple[jax.Array, jax.Array]:
        return _population_fitness(
            params_batch, seed, generation, episode_ids, data, task, learner, fitness_mode
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
