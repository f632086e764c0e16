"""Hebbian fast weights with Oja's rule, meta-learned by ES (Miconi et al. 2018 style).

The effective weight of connection (i, j) is ``w_ij + alpha_ij * H_ij``: a slow, meta-learned
part plus a plastic part whose gain ``alpha`` is meta-learned too. After each prediction the
post-synaptic activity is a meta-learned mix of the target, the prediction and a constant, and
the fast weights follow Oja's rule ``dH_ij = eta * y_j * (x_i - y_j * H_ij)``, which keeps them
bounded. With the initial parameters (post = target, alpha = 1) H tracks a running mean of each
class's inputs, a prototype classifier that already learns before any meta-training.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vsml_es.learners.base import InitFn, Learner, Params, StepFn

INITIAL_ETA = 0.1


def init_params(key: jax.Array, num_features: int, num_outputs: int) -> Params:
    del key  # a deterministic, already-learning starting point for ES
    return {
        "w": jnp.zeros((num_features, num_outputs)),
        "alpha": jnp.ones((num_features, num_outputs)),
        "b": jnp.zeros((num_outputs,)),
        "eta_logit": jnp.full((), jnp.log(INITIAL_ETA / (1 - INITIAL_ETA))),
        # post-synaptic activity = post[0]*target + post[1]*softmax(prediction) + post[2]
        "post": jnp.array([1.0, 0.0, 0.0]),
    }


def make_learner(params: Params, num_outputs: int) -> tuple[InitFn, StepFn]:
    eta = jax.nn.sigmoid(params["eta_logit"])

    def init(key: jax.Array) -> jax.Array:
        del key
        return jnp.zeros_like(params["w"])

    def step(fast: jax.Array, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = x @ (params["w"] + params["alpha"] * fast) + params["b"]
        target = jax.nn.one_hot(y, num_outputs)
        c = params["post"]
        post = c[0] * target + c[1] * jax.nn.softmax(logits) + c[2]
        fast = fast + eta * post[None, :] * (x[:, None] - post[None, :] * fast)
        return fast, logits

    return init, step


@dataclass(frozen=True)
class HebbianLearner(Learner):
    """Oja-rule fast weights; no static settings."""

    label = "Hebbian (Oja)"

    def init_params(self, key: jax.Array, num_features: int, num_outputs: int) -> Params:
        return init_params(key, num_features, num_outputs)

    def make(self, params: Params, num_features: int, num_outputs: int) -> tuple[InitFn, StepFn]:
        return make_learner(params, num_outputs)
