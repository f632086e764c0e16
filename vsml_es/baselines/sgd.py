"""Online SGD on a linear softmax classifier: one gradient step per example, after predicting."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vsml_es.episodes import InitFn, StepFn

LinearState = tuple[jax.Array, jax.Array]


def linear_sgd_learner(
    learning_rate: jax.Array | float, num_features: int, num_classes: int
) -> tuple[InitFn, StepFn]:
    def init(key: jax.Array) -> LinearState:
        del key  # zero init: the classic online-learning baseline has no random weights
        return jnp.zeros((num_features, num_classes)), jnp.zeros((num_classes,))

    def step(state: LinearState, x: jax.Array, y: jax.Array) -> tuple[LinearState, jax.Array]:
        w, b = state
        logits = x @ w + b
        grad_logits = jax.nn.softmax(logits) - jax.nn.one_hot(y, num_classes)
        w = w - learning_rate * jnp.outer(x, grad_logits)
        b = b - learning_rate * grad_logits
        return (w, b), logits

    return init, step
