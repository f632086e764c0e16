"""Meta-training with gradients through the unrolled inner loop: imitation (paper section 4.1)
and the official code's backprop meta-optimization (``training.method: backprop``).

The learner runs online on a stream beside a hand-designed optimizer (online SGD or Adam on a
linear model starting from zero weights, or on an MLP with VSML's hidden layer: the deep case)
that sees the same examples; the meta-loss compares their predictions at every step. A
learner that imitates well keeps learning the way the optimizer does, on any stream, which ES
on short episodes does not give.
Its result can be meta-tested as it is or refine an ES run (``training.init_params``).
Without a target (``backprop``) the meta-loss is the learner's own online cross-entropy, the
quantity ES minimizes (official ``configs/backprop.yaml``, ``optimizer.type: sgd``).

The state is the ES-state slot of a run (parameters and Adam moments), so checkpoints, resume
and the metrics log work unchanged; each "generation" is one Adam step on a batch of
``training.population_size`` episodes drawn exactly as ES draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vsml_es.config import TrainingConfig
from vsml_es.episodes import (
    episode_keys,
    episode_live_outputs,
    fitness_from_losses,
    masked_logits,
    start_episode,
)
from vsml_es.learners.base import Learner, Params, StepFn
from vsml_es.learners.gradient import GradientLearner
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.tasks import Data, EpisodeSource


def centred(logits: jax.Array) -> jax.Array:
    """Softmax ignores a common offset, so neither does the imitation loss."""
    return logits - jnp.mean(logits, axis=-1, keepdims=True)


def imitation_error(logits: jax.Array, target_logits: jax.Array, kind: str,
                    live: jax.Array | None = None) -> jax.Array:
    """'logits': squared difference of centred logits (matches the optimizer's confidence
    exactly, so large late-stream logits dominate); 'kl': KL(target || learner) of the
    predictions, which asks for the same beliefs at any logit scale.

    ``live`` (task.per_dataset_outputs): only the first ``live`` outputs count, centred and
    averaged over those alone, so the error is that of a network ``live`` wide."""
    target_logits = jax.lax.stop_gradient(target_logits)
    if live is None:
        if kind == "kl":
            p = jax.nn.softmax(target_logits)
            return jnp.sum(p * (jax.nn.log_softmax(target_logits)
                                - jax.nn.log_softmax(logits)))
        return jnp.mean((centred(logits) - centred(target_logits)) ** 2)
    mask = jnp.arange(logits.shape[-1]) < live
    if kind == "kl":
        # Dead outputs sit at -inf inside the softmax; 'where' keeps their 0 * inf out.
        log_q = jnp.where(mask, jax.nn.log_softmax(masked_logits(logits, live)), 0.0)
        log_p = jnp.where(mask, jax.nn.log_softmax(masked_logits(target_logits, live)), 0.0)
        return jnp.sum(jnp.where(mask, jnp.exp(log_p) * (log_p - log_q), 0.0))
    count = jnp.sum(mask)

    def live_centred(v: jax.Array) -> jax.Array:
        v = jnp.where(mask, v, 0.0)
        return jnp.where(mask, v - jnp.sum(v) / count, 0.0)

    return jnp.sum((live_centred(logits) - live_centred(target_logits)) ** 2) / count


def imitate_steps(step: StepFn, t_step: StepFn | None, states: tuple[Any, Any], task: EpisodeSource,
                  data: Data, spec: Any, ts: jax.Array, loss: str,
                  task_weight: float = 0.0, live: jax.Array | None = None,
                  ) -> tuple[tuple[Any, Any], tuple[jax.Array, jax.Array]]:
    """Learner and target side by side over steps ``ts`` of one stream: their final states, and
    per step the meta-loss (imitation error plus ``task_weight`` times the learner's online
    cross-entropy) and whether the learner's prediction was right; ``live`` masks the outputs
    beyond the episode's classes out of all three, as ``episodes.run_online`` does."""

    @jax.checkpoint  # keep only the carries per step; recompute the gates on the way back
    def body(carry: Any, t: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        state, t_state = carry
        x, y = task.example(data, spec, t)
        state, logits = step(state, x, y)
        if t_step is None:  # no target (method backprop): the task term alone
            err = jnp.float32(0.0)
        else:
            t_state, t_logits = t_step(t_state, x, y)
            err = imitation_error(logits, t_logits, loss, live)
        logits = masked_logits(logits, live)
        if task_weight:  # static: imitation-only runs trace exactly as before
            err = err + task_weight * -jax.nn.log_softmax(logits)[y]
        return (state, t_state), (err, (jnp.argmax(logits) == y).astype(jnp.float32))

    return jax.lax.scan(body, states, ts)


def imitation_episode(
    learner: Learner, params: Params, target: Learner | None, target_params: Params,
    key: jax.Array, data: Data, task: EpisodeSource, loss: str = "logits",
    task_weight: float = 0.0, fitness: str = "mean_loss",
) -> tuple[jax.Array, jax.Array]:
    """(meta-loss, online accuracy) of one episode: the stream, keys and output mask are
    those ``episodes.learner_episode`` gives the learner (one ``start_episode`` for both); the
    target sees the same live outputs. ``fitness``: how the per-step losses reduce, as for ES
    (mean, or the last step's: the official ``loss_type``)."""
    init, step, k_learner, spec, live = start_episode(learner, params, key, task)
    t_init, t_step = _target_fns(target, target_params, task, live)
    states = (init(k_learner), None if t_init is None else t_init(k_learner))
    _, (errs, correct) = imitate_steps(step, t_step, states, task, data, spec,
                                       jnp.arange(task.episode_length), loss, task_weight, live)
    return fitness_from_losses(errs, fitness), jnp.mean(correct)


def _target_fns(target: Learner | None, target_params: Params, task: EpisodeSource,
                live: jax.Array | None) -> tuple[Any, StepFn | None]:
    """The imitated optimizer on the learner's live outputs (it masks like the learner)."""
    if target is None:
        return None, None
    return target.make_for(target_params, task, live if target.masks_outputs else None)


class Carry(NamedTuple):
    """One long episode in progress (``training.imitation_horizon``): its key, the next step,
    and the learner's and the target's states there."""

    key: jax.Array
    t: jax.Array
    state: Any
    target_state: Any


@dataclass(frozen=True)
class Imitation:
    """The settings of a gradient meta-training run (hashable: a static jit argument and
    small enough to travel to the workers once): its state is ``init``'s pytree, its
    gradients come per chunk of episodes (``chunk_gradients``) and are summed in chunk order
    by ``vsml_es.methods.gradient``, in-process and on Ray alike."""

    learner: Learner
    target: Learner | None  # None: training.method backprop (the task loss alone)
    target_learning_rate: float  # already divided by the input size
    learning_rate: float
    population_size: int  # episodes per step
    horizon: int  # 0: fresh episodes every step; else carried episodes of this many steps
    task: EpisodeSource
    seed: int
    loss: str = "logits"  # see imitation_error
    task_weight: float = 0.0  # training.imitation_task_weight
    gradient_clip: float = 1.0  # training.gradient_clip (0: none)
    fitness: str = "mean_loss"  # reduction of a fresh episode's per-step losses

    @property
    def optimizer(self) -> optax.GradientTransformation:
        adam = optax.adam(self.learning_rate)
        if not self.gradient_clip:
            return adam
        return optax.chain(optax.clip_by_global_norm(self.gradient_clip), adam)

    @property
    def target_params(self) -> Params:
        return {"learning_rate": jnp.float32(self.target_learning_rate)}

    def init(self, template: Params) -> dict[str, Any]:
        state = {"params": template, "opt": self.optimizer.init(template)}
        if self.horizon:
            state["episodes"] = _initial_carries(self, template)
        return state


def _fresh(method: Imitation, params: Params, key: jax.Array, t: jax.Array) -> Carry:
    """A new episode starting at step ``t`` of the stream of ``key`` (keys split as in
    ``online_episode``, so the stream is the one ES and the meta-test would draw)."""
    task = method.task
    k_learner = jax.random.split(key)[1]
    # The initial states do not depend on the live outputs: the network is always full width.
    init, _ = method.learner.make_for(params, task)
    t_init, _ = _target_fns(method.target, method.target_params, task, None)
    return Carry(key, t, init(k_learner), None if t_init is None else t_init(k_learner))


def _initial_carries(method: Imitation, params: Params) -> Carry:
    """Episodes staggered over the horizon, so every step imitates early and late steps."""
    b, unroll = method.population_size, method.task.episode_length
    windows = method.horizon // unroll
    starts = jnp.asarray([(i * windows // b) * unroll for i in range(b)], jnp.int32)
    keys = episode_keys(jnp.int32(method.seed), jnp.int32(0), jnp.arange(b, dtype=jnp.int32))
    return jax.vmap(lambda k, t: _fresh(method, params, k, t))(keys, starts)


def _carried_episode(method: Imitation, params: Params, carry: Carry, new_key: jax.Array,
                     data: Data) -> tuple[jax.Array, jax.Array, Carry]:
    """``task.episode_length`` steps of a long episode from where ``carry`` stopped; an episode
    that reached the horizon starts over on the stream of ``new_key``."""
    restart = carry.t >= method.horizon
    fresh = _fresh(method, params, new_key, jnp.int32(0))
    carry = jax.tree.map(lambda a, b: jnp.where(restart, a, b), fresh, carry)
    long_task = method.task.with_episode_length(method.horizon)
    spec = long_task.episode(jax.random.split(carry.key)[0])
    live = episode_live_outputs(method.learner, long_task, spec)
    _, step = method.learner.make_for(params, long_task, live)
    _, t_step = _target_fns(method.target, method.target_params, long_task, live)
    # Truncated backprop: the carried state is a constant of this step's loss.
    start = (jax.lax.stop_gradient(carry.state), carry.target_state)
    ts = carry.t + jnp.arange(method.task.episode_length)
    (state, t_state), (errs, correct) = imitate_steps(step, t_step, start, long_task, data, spec,
                                                      ts, method.loss, method.task_weight, live)
    end = Carry(carry.key, carry.t + method.task.episode_length, state, t_state)
    return jnp.mean(errs), jnp.mean(correct), end


@partial(jax.jit, static_argnames=("method",))
def chunk_gradients(method: Imitation, params: Params, generation: jax.Array,
                    episode_ids: jax.Array, weights: jax.Array, carries: Carry | None,
                    data: Data) -> tuple[jax.Array, jax.Array, Params, Carry | None]:
    """Weighted sums over one chunk of episodes (padding lanes weigh 0) of the meta-loss, the
    online accuracy and the meta-loss's gradient, and the chunk's carried episodes after
    this step (``training.imitation_horizon``; None without)."""
    keys = episode_keys(jnp.int32(method.seed), generation, episode_ids)

    def chunk_loss(params: Params) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        if method.horizon:
            losses, accs, new = jax.vmap(
                _carried_episode, in_axes=(None, None, 0, 0, None))(
                method, params, carries, keys, data)
        else:
            losses, accs = jax.vmap(
                imitation_episode,
                in_axes=(None, None, None, None, 0, None, None, None, None, None))(
                method.learner, params, method.target, method.target_params, keys, data,
                method.task, method.loss, method.task_weight, method.fitness)
            new = None
        return jnp.sum(weights * losses), (jnp.sum(weights * accs), new)

    (loss, (acc, new)), grads = jax.value_and_grad(chunk_loss, has_aux=True)(params)
    return loss, acc, grads, jax.lax.stop_gradient(new)


@partial(jax.jit, static_argnames=("method",))
def apply_gradients(method: Imitation, state: dict[str, Any],
                    grad_sum: Params) -> dict[str, Any]:
    """One optimizer step on the batch-mean gradient (``grad_sum`` over all episodes)."""
    grads = jax.tree.map(lambda g: g / method.population_size, grad_sum)
    updates, opt = method.optimizer.update(grads, state["opt"], state["params"])
    return {**state, "params": optax.apply_updates(state["params"], updates), "opt": opt}


def imitation_target(name: str, learner: Learner, decay_steps: float = 0.0) -> GradientLearner:
    """The optimizer ``training.imitation_target`` names, as the baseline learner of that name.

    An MLP target (``sgd_mlp``, ``adam_mlp``) gets VSML's hidden layer width, which the config
    checks equal ``metatest.mlp_hidden``: the baseline meta-tested beside VSML under that name
    is then the very network it imitated.
    """
    optimizer, _, mlp = name.partition("_")
    if not mlp:
        return GradientLearner(optimizer, decay_steps=decay_steps)
    if not isinstance(learner, VsmlLearner) or len(learner.model.hidden_layers) != 1:
        raise ValueError(f"imitation target '{name}' needs VSML with one hidden layer")
    return GradientLearner(optimizer, learner.model.hidden_layers[0], decay_steps)


def build_imitation(training: TrainingConfig, learner: Learner, task: EpisodeSource,
                    fitness: str = "mean_loss") -> Imitation:
    """``training.method`` imitation, or backprop: no target, the task loss (reduced as
    ``fitness``, task.fitness) as the whole meta-loss."""
    backprop = training.method == "backprop"
    return Imitation(
        learner=learner,
        target=None if backprop else imitation_target(training.imitation_target, learner,
                                                      training.imitation_decay_steps),
        target_learning_rate=training.imitation_learning_rate / task.num_features,
        learning_rate=training.learning_rate,
        population_size=training.population_size,
        horizon=training.imitation_horizon,
        task=task,
        seed=training.seed,
        loss=training.imitation_loss,
        task_weight=1.0 if backprop else training.imitation_task_weight,
        gradient_clip=training.gradient_clip,
        fitness=fitness if backprop else "mean_loss",
    )
