"""Meta-training by imitation (paper section 4.1): gradients through the unrolled inner loop.

The learner runs online on a stream beside a hand-designed optimizer (online SGD or Adam on a
linear model, starting from zero weights) that sees the same examples; the meta-loss is the
squared difference of their centred logits at every step. A learner that imitates well keeps
learning the way the optimizer does, on any stream, which ES on short episodes does not give.
Its result can be meta-tested as it is or refine an ES run (``training.init_params``).

The state is the ES-state slot of a run (parameters and Adam moments), so checkpoints, resume
and the metrics log work unchanged; each "generation" is one Adam step on a batch of
``training.population_size`` episodes drawn exactly as ES draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vsml_es.config import TrainingConfig
from vsml_es.episodes import episode_keys
from vsml_es.learners.base import Learner, Params
from vsml_es.learners.gradient import GradientLearner
from vsml_es.tasks import Data, EpisodeSource

GRADIENT_CLIP = 1.0  # global-norm clip: BPTT through hundreds of LSTM ticks can spike


def centred(logits: jax.Array) -> jax.Array:
    """Softmax ignores a common offset, so neither does the imitation loss."""
    return logits - jnp.mean(logits, axis=-1, keepdims=True)


def imitation_episode(
    learner: Learner, params: Params, target: Learner, target_params: Params,
    key: jax.Array, data: Data, task: EpisodeSource,
) -> tuple[jax.Array, jax.Array]:
    """(imitation loss, online accuracy) of one episode; the stream is ``online_episode``'s."""
    k_spec, k_learner = jax.random.split(key)
    spec = task.episode(k_spec)
    init, step = learner.make(params, task.num_features, task.num_outputs)
    t_init, t_step = target.make(target_params, task.num_features, task.num_outputs)

    @jax.checkpoint  # keep only the carries per step; recompute the gates on the way back
    def body(carry: Any, t: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        state, t_state = carry
        x, y = task.example(data, spec, t)
        state, logits = step(state, x, y)
        t_state, t_logits = t_step(t_state, x, y)
        err = jnp.mean((centred(logits) - jax.lax.stop_gradient(centred(t_logits))) ** 2)
        return (state, t_state), (err, (jnp.argmax(logits) == y).astype(jnp.float32))

    carry = (init(k_learner), t_init(k_learner))
    _, (errs, correct) = jax.lax.scan(body, carry, jnp.arange(task.episode_length))
    return jnp.mean(errs), jnp.mean(correct)


@dataclass(frozen=True)
class Imitation:
    """Looks like an evosax algorithm to the trainer (init / get_mean over a state pytree),
    plus ``update``: one Adam step on the imitation loss of a batch of episodes."""

    learner: Learner
    target: Learner
    target_learning_rate: float  # already divided by the input size
    learning_rate: float
    population_size: int  # episodes per step

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(GRADIENT_CLIP), optax.adam(self.learning_rate))

    def init(self, key: jax.Array, template: Params, params: Any) -> dict[str, Any]:
        del key, params
        return {"params": template, "opt": self.optimizer.init(template)}

    def get_mean(self, state: dict[str, Any]) -> Params:
        return state["params"]

    def update(self, state: dict[str, Any], seed: int, generation: int, episode_ids: Any,
               data: Data, task: EpisodeSource) -> tuple[dict[str, Any], jax.Array, jax.Array]:
        return _update(self, state, jnp.int32(seed), jnp.int32(generation),
                       jnp.asarray(episode_ids), data, task)


@partial(jax.jit, static_argnames=("method", "task"))
def _update(method: Imitation, state: dict[str, Any], seed: jax.Array, generation: jax.Array,
            episode_ids: jax.Array, data: Data, task: EpisodeSource):
    keys = episode_keys(seed, generation, episode_ids)
    target_params = {"learning_rate": jnp.float32(method.target_learning_rate)}

    def batch_loss(params: Params) -> tuple[jax.Array, jax.Array]:
        losses, accs = jax.vmap(imitation_episode, in_axes=(None, None, None, None, 0, None, None))(
            method.learner, params, method.target, target_params, keys, data, task)
        return jnp.mean(losses), jnp.mean(accs)

    (loss, acc), grads = jax.value_and_grad(batch_loss, has_aux=True)(state["params"])
    updates, opt = method.optimizer.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss, acc


def build_imitation(training: TrainingConfig, learner: Learner, num_features: int) -> Imitation:
    return Imitation(
        learner=learner,
        target=GradientLearner(training.imitation_target),
        target_learning_rate=training.imitation_learning_rate / num_features,
        learning_rate=training.learning_rate,
        population_size=training.population_size,
    )
