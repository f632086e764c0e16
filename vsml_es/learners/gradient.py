"""Hand-designed learners: online SGD or Adam on a linear model or a one-hidden-layer MLP.

One optimizer step per example, taken after predicting it, so the logits of each step are an
honest online prediction. Behind the learner interface their parameters are their
hyperparameters (``{"learning_rate": scalar}``), chosen from a grid on meta-training streams;
the learning rate is a traced array, so one compiled function serves the whole grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vsml_es.learners.base import InitFn, Learner, Params, StepFn

MlpParams = list[tuple[jax.Array, jax.Array]]  # (weights [in, out], bias [out]) per layer


def inverse_sqrt_decay(learning_rate: jax.Array | float, decay_steps: float) -> optax.Schedule:
    """``lr / sqrt(1 + t / decay_steps)`` at the optimizer's own step t: fast on the first
    examples of a stream, and small enough late that it keeps improving instead of jittering."""
    return lambda count: learning_rate / jnp.sqrt(1.0 + count / decay_steps)


def make_optimizer(name: str, learning_rate: jax.Array | float,
                   decay_steps: float = 0.0) -> optax.GradientTransformation:
    """``decay_steps`` > 0: the learning rate decays as :func:`inverse_sqrt_decay`."""
    rate = inverse_sqrt_decay(learning_rate, decay_steps) if decay_steps else learning_rate
    if name == "sgd":
        return optax.sgd(rate)
    if name == "adam":
        return optax.adam(rate)
    raise ValueError(f"Unknown optimizer '{name}'; valid: sgd, adam.")


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> MlpParams:
    """He-normal hidden layers; the output layer starts at zero, so every gradient baseline
    starts from the uniform prediction (a linear model is then the classic zero init)."""
    layers = []
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        if i == len(sizes) - 2:
            w = jnp.zeros((n_in, n_out))
        else:
            w = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)
        layers.append((w, jnp.zeros((n_out,))))
    return layers


def mlp_logits(params: MlpParams, x: jax.Array) -> jax.Array:
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def gradient_learner(
    optimizer: str,
    learning_rate: jax.Array | float,
    num_features: int,
    num_classes: int,
    hidden: int = 0,
    live: jax.Array | None = None,
    decay_steps: float = 0.0,
) -> tuple[InitFn, StepFn]:
    """Online ``optimizer`` on a linear model or an MLP (see :func:`online_gradient_learner`)."""
    sizes = (num_features, hidden, num_classes) if hidden else (num_features, num_classes)
    return online_gradient_learner(optimizer, learning_rate, lambda key: init_mlp(key, sizes),
                                   mlp_logits, num_classes, live, decay_steps)


def online_gradient_learner(
    optimizer: str,
    learning_rate: jax.Array | float,
    init_params: Callable[[jax.Array], Any],
    logits_fn: Callable[[Any, jax.Array], jax.Array],
    num_classes: int,
    live: jax.Array | None = None,
    decay_steps: float = 0.0,
) -> tuple[InitFn, StepFn]:
    """Online learner for any network (``init_params``, ``logits_fn``): predict x, then one
    ``optimizer`` step on its cross-entropy (over the first ``live`` outputs only when given:
    the others get no gradient, as if absent)."""
    opt = make_optimizer(optimizer, learning_rate, decay_steps)

    def init(key: jax.Array):
        params = init_params(key)
        return params, opt.init(params)

    def loss_fn(params: Any, x: jax.Array, y: jax.Array):
        logits = logits_fn(params, x)
        if live is None:
            return -jax.nn.log_softmax(logits)[y], logits
        live_logits = jnp.where(jnp.arange(num_classes) < live, logits, -jnp.inf)
        return -jax.nn.log_softmax(live_logits)[y], logits

    def step(state, x: jax.Array, y: jax.Array):
        params, opt_state = state
        (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), logits

    return init, step


@dataclass(frozen=True)
class GradientLearner(Learner):
    """Online ``optimizer`` (sgd | adam) on a linear model, or an MLP with ``hidden`` units;
    ``decay_steps`` > 0 decays its learning rate (:func:`inverse_sqrt_decay`)."""

    optimizer: str
    hidden: int = 0
    decay_steps: float = 0.0
    size_free = True
    masks_outputs = True

    @property
    def label(self) -> str:  # type: ignore[override]
        name = {"sgd": "SGD", "adam": "Adam"}[self.optimizer]
        return f"{name} MLP-{self.hidden}" if self.hidden else f"{name} linear"

    def init_params(self, key: jax.Array, num_features: int, num_outputs: int) -> Params:
        del key, num_features, num_outputs  # tuning replaces it; a common middle of the grids
        return {"learning_rate": jnp.asarray(0.01, jnp.float32)}

    def make(self, params: Params, num_features: int, num_outputs: int,
             live: jax.Array | None = None) -> tuple[InitFn, StepFn]:
        return gradient_learner(self.optimizer, params["learning_rate"], num_features,
                                num_outputs, self.hidden, live, self.decay_steps)

    def describe(self, params: Params) -> str:
        decay = f", decay {self.decay_steps:g}" if self.decay_steps else ""
        return f"{self.label} (lr {float(params['learning_rate']):g}{decay})"


def learning_rate_grid(rates: tuple[float, ...]) -> tuple[Params, ...]:
    """Candidate parameters of a gradient learner, one per learning rate."""
    return tuple({"learning_rate": jnp.asarray(rate, jnp.float32)} for rate in rates)
