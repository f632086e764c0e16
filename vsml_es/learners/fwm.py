"""Fast-weight memory: a delta-rule associative memory programmed by meta-learned slow weights
(a fast weight programmer in the sense of Schmidhuber 1992 and Schlag et al. 2021).

Each input is mapped to a unit-norm key; the prediction reads the memory ``M`` at that key.
After the label arrives, a meta-learned value (from the label and the error) is written with the
delta rule ``M += beta * (v - M k) k^T``, which overwrites what the memory held for that key
instead of piling up. The initial parameters write the one-hot label, so the memory already
learns before meta-training; ES shapes keys, values, write strength and read-out.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vsml_es.learners.base import InitFn, Learner, Params, StepFn


def init_params(key: jax.Array, num_features: int, num_outputs: int, key_size: int) -> Params:
    w_key = jax.random.truncated_normal(key, -2.0, 2.0, (num_features, key_size))
    value_w = jnp.concatenate([jnp.eye(num_outputs), jnp.zeros((num_outputs, num_outputs))])
    return {
        "key_w": w_key / jnp.sqrt(num_features),
        "key_b": jnp.zeros((key_size,)),
        "value_w": value_w,  # rows: [label one-hot; error]
        "value_b": jnp.zeros((num_outputs,)),
        "beta_logit": jnp.zeros(()),  # write strength sigmoid(0) = 0.5
        "out_w": 5.0 * jnp.eye(num_outputs),
        "out_b": jnp.zeros((num_outputs,)),
    }


def memory_key(params: Params, x: jax.Array) -> jax.Array:
    k = jnp.tanh(x @ params["key_w"] + params["key_b"])
    return k / (jnp.linalg.norm(k) + 1e-6)


def make_learner(params: Params, num_outputs: int) -> tuple[InitFn, StepFn]:
    key_size = params["key_w"].shape[1]
    beta = jax.nn.sigmoid(params["beta_logit"])

    def init(key: jax.Array) -> jax.Array:
        del key
        return jnp.zeros((num_outputs, key_size))

    def step(memory: jax.Array, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = memory_key(params, x)
        read = memory @ k
        logits = read @ params["out_w"] + params["out_b"]
        onehot = jax.nn.one_hot(y, num_outputs)
        error = jax.nn.softmax(logits) - onehot
        value = jnp.concatenate([onehot, error]) @ params["value_w"] + params["value_b"]
        memory = memory + beta * jnp.outer(value - read, k)
        return memory, logits

    return init, step


@dataclass(frozen=True)
class FwmLearner(Learner):
    """The fast-weight memory with keys of ``key_size``."""

    key_size: int = 128  # fast-weight key size (model.baseline_hidden)
    label = "FWM (delta rule)"

    def init_params(self, key: jax.Array, num_features: int, num_outputs: int) -> Params:
        return init_params(key, num_features, num_outputs, self.key_size)

    def make(self, params: Params, num_features: int, num_outputs: int) -> tuple[InitFn, StepFn]:
        return make_learner(params, num_outputs)
