"""The official few-shot baseline: online SGD or Adam on a small convolutional network.

The official ``models.SGD`` with ``use_conv: True`` (configs/sgd_omniglot.yaml, Adam at 0.001)
puts three convolutions (8 channels, 3x3 kernels, stride 2, SAME padding, each followed by
tanh) before a linear read-out whose logits are bounded as ``100 * tanh(logits / 100)``
(``tanh_bound: 100``), with Haiku's default initialisation: every kernel and the read-out
truncated normal (cut at two standard deviations) with std ``1 / sqrt(fan_in)``, biases zero.
It learns online like the other gradient baselines: predict, then one optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from vsml_es.errors import LearnerError
from vsml_es.learners.base import InitFn, Params, StepFn
from vsml_es.learners.gradient import GradientLearner, online_gradient_learner

CHANNELS = 8
KERNEL = 3
STRIDE = 2
CONV_LAYERS = 3
OUTPUT_BOUND = 100.0  # official tanh_bound

Layer = tuple[jax.Array, jax.Array]  # (weights, bias)
ConvNetParams = tuple[tuple[Layer, ...], Layer]  # (conv layers HWIO, read-out [in, out])


def conv_output_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """[H, W, C] after the conv layers: SAME padding at stride 2 halves each side, rounding up."""
    height, width, _ = input_shape
    for _ in range(CONV_LAYERS):
        height, width = math.ceil(height / STRIDE), math.ceil(width / STRIDE)
    return height, width, CHANNELS


def _truncated(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    return jax.random.truncated_normal(key, -2.0, 2.0, shape) / math.sqrt(fan_in)


def init_conv_net(key: jax.Array, input_shape: tuple[int, ...],
                  num_classes: int) -> ConvNetParams:
    """Fresh weights, as Haiku's Conv2D and Linear draw them by default."""
    keys = jax.random.split(key, CONV_LAYERS + 1)
    channels = input_shape[2]
    convs = []
    for k in keys[:-1]:
        fan_in = KERNEL * KERNEL * channels
        convs.append((_truncated(k, (KERNEL, KERNEL, channels, CHANNELS), fan_in),
                      jnp.zeros((CHANNELS,))))
        channels = CHANNELS
    features = math.prod(conv_output_shape(input_shape))
    readout = (_truncated(keys[-1], (features, num_classes), features), jnp.zeros((num_classes,)))
    return tuple(convs), readout


def conv_net_logits(params: ConvNetParams, x: jax.Array,
                    input_shape: tuple[int, ...]) -> jax.Array:
    """Bounded logits of one flattened example (features in H, W, C order)."""
    convs, (w, b) = params
    z = x.reshape(1, *input_shape)
    for kernel, bias in convs:
        z = jax.lax.conv_general_dilated(z, kernel, (STRIDE, STRIDE), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        z = jnp.tanh(z + bias)
    logits = z.reshape(-1) @ w + b
    return OUTPUT_BOUND * jnp.tanh(logits / OUTPUT_BOUND)


@dataclass(frozen=True)
class ConvGradientLearner(GradientLearner):
    """Online ``optimizer`` (sgd | adam) on the official 3-conv baseline network; its
    parameters are its learning rate, as for the other gradient baselines."""

    @property
    def label(self) -> str:  # type: ignore[override]
        return {"sgd": "SGD", "adam": "Adam"}[self.optimizer] + " 3-conv"

    @property
    def takes_input_shape(self) -> bool:
        return True

    def make(self, params: Params, num_features: int, num_outputs: int,  # type: ignore[override]
             live: jax.Array | None = None,
             input_shape: tuple[int, ...] = ()) -> tuple[InitFn, StepFn]:
        if len(input_shape) != 3 or math.prod(input_shape) != num_features:
            raise LearnerError(
                f"{self.label} convolves images: it needs examples of shape HEIGHT x WIDTH x "
                f"CHANNELS ({num_features} features), got shape {tuple(input_shape)}."
            )
        shape = tuple(input_shape)
        return online_gradient_learner(
            self.optimizer, params["learning_rate"],
            lambda key: init_conv_net(key, shape, num_outputs),
            lambda p, x: conv_net_logits(p, x, shape), num_outputs, live)
