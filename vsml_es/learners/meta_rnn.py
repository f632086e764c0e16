"""Meta-RNN in the style of Hochreiter, Younger & Conwell (2001): an LSTM that learns in its
activations. Each step it sees the input together with the previous example's error and label,
so all learning within an episode lives in the hidden state; ES meta-learns the weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.learners.base import InitFn, Learner, Params, StepFn

FORGET_BIAS = 1.0  # the usual LSTM forget-gate offset: remember by default


class RnnState(NamedTuple):
    h: jax.Array
    c: jax.Array
    prev_error: jax.Array  # softmax(prediction) - onehot(label) of the previous example
    prev_label: jax.Array  # onehot label of the previous example


def _trunc(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    return jax.random.truncated_normal(key, -2.0, 2.0, shape) / jnp.sqrt(fan_in)


def init_params(key: jax.Array, num_features: int, num_outputs: int, hidden: int) -> Params:
    fan_in = num_features + 2 * num_outputs + hidden
    k_x, k_e, k_l, k_h, k_o = jax.random.split(key, 5)
    return {
        "w_x": _trunc(k_x, (num_features, 4 * hidden), fan_in),
        "w_err": _trunc(k_e, (num_outputs, 4 * hidden), fan_in),
        "w_label": _trunc(k_l, (num_outputs, 4 * hidden), fan_in),
        "w_h": _trunc(k_h, (hidden, 4 * hidden), fan_in),
        "b": jnp.zeros((4 * hidden,)),
        "w_out": _trunc(k_o, (hidden, num_outputs), hidden),
        "b_out": jnp.zeros((num_outputs,)),
    }


def lstm_step(params: Params, h: jax.Array, c: jax.Array, z_in: jax.Array):
    z = z_in + h @ params["w_h"] + params["b"]
    i, g, f, o = jnp.split(z, 4)
    c = jax.nn.sigmoid(f + FORGET_BIAS) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def make_learner(params: Params, num_outputs: int) -> tuple[InitFn, StepFn]:
    hidden = params["w_h"].shape[0]

    def init(key: jax.Array) -> RnnState:
        del key
        zeros = jnp.zeros((hidden,))
        return RnnState(zeros, zeros, jnp.zeros((num_outputs,)), jnp.zeros((num_outputs,)))

    def step(state: RnnState, x: jax.Array, y: jax.Array) -> tuple[RnnState, jax.Array]:
        z_in = (x @ params["w_x"] + state.prev_error @ params["w_err"]
                + state.prev_label @ params["w_label"])
        h, c = lstm_step(params, state.h, state.c, z_in)
        logits = h @ params["w_out"] + params["b_out"]
        onehot = jax.nn.one_hot(y, num_outputs)
        return RnnState(h, c, jax.nn.softmax(logits) - onehot, onehot), logits

    return init, step


@dataclass(frozen=True)
class MetaRnnLearner(Learner):
    """The Meta-RNN with ``hidden`` LSTM units."""

    hidden: int = 128  # LSTM units (model.baseline_hidden)
    label = "Meta-RNN"

    def init_params(self, key: jax.Array, num_features: int, num_outputs: int) -> Params:
        return init_params(key, num_features, num_outputs, self.hidden)

    def make(self, params: Params, num_features: int, num_outputs: int) -> tuple[InitFn, StepFn]:
        return make_learner(params, num_outputs)
