"""The learner's clock (``model.clock_timescales``): the step count reaches every LSTM's gates
as tanh(t / tau) through meta-learned weights that start at zero, so a learner meta-trained
without a clock continues with one computing exactly what it did."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import refused_before_work
from vsml_es import vsml
from vsml_es.config import ModelConfig
from vsml_es.experiment import check_init_params, load_experiment
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.storage.learner_file import read_learner_file

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
GENERALIZATION = ROOT / "experiments" / "generalization.yaml"
SHIPPED = ROOT / "docs" / "results" / "imitation-kl-task3-u200-seed0.vsml"
CLOCK = (10.0, 100.0)
MODELS = [ModelConfig(),
          ModelConfig(hidden_layers=(6,), layerwise_lstms=True, separate_backward_lstm=True)]


def stream(steps: int = 6, features: int = 7, classes: int = 3) -> tuple[jax.Array, jax.Array]:
    kx, ky = jax.random.split(jax.random.key(5))
    return (jax.random.normal(kx, (steps, features)),
            jax.random.randint(ky, (steps,), 0, classes))


def episode_logits(model: ModelConfig, params: Any, xs: jax.Array, ys: jax.Array,
                   classes: int = 3) -> np.ndarray:
    init, step = VsmlLearner(model).make(params, xs.shape[1], classes)
    _, logits = jax.lax.scan(lambda n, xy: step(n, *xy), init(jax.random.key(2)), (xs, ys))
    return np.asarray(logits)


@pytest.mark.parametrize("model", MODELS, ids=["single", "deep-layerwise-backward"])
def test_a_zero_clock_changes_nothing_and_a_trained_one_acts_through_the_gate_bias(
        model: ModelConfig) -> None:
    clocked = dataclasses.replace(model, clock_timescales=CLOCK)
    plain = vsml.init_params(jax.random.key(0), model)
    params = vsml.init_params(jax.random.key(0), clocked)
    assert set(params) - set(plain) == {vsml.CLOCK_PARAM} | (
        {vsml.BACKWARD_PREFIX + vsml.CLOCK_PARAM} if model.separate_backward_lstm else set())
    assert sum(v.size for v in params.values()) == vsml.num_params(clocked)
    xs, ys = stream()
    np.testing.assert_array_equal(episode_logits(clocked, params, xs, ys),
                                  episode_logits(model, plain, xs, ys))

    # Trained clock weights: step t runs as the plain network with the bias moved by
    # tanh(t / tau) . W, the same for every connection of every layer.
    weights = {name: jax.random.normal(jax.random.key(9), value.shape)
               for name, value in params.items() if name.endswith(vsml.CLOCK_PARAM)}
    params = {**params, **weights}
    clocked_logits = episode_logits(clocked, params, xs, ys)
    init, _ = VsmlLearner(model).make(plain, xs.shape[1], 3)
    net, manual = init(jax.random.key(2)), []
    for t in range(len(ys)):
        moved = dict(plain)
        for name, w in weights.items():
            bias = name[: -len(vsml.CLOCK_PARAM)] + "lstm_b"
            moved[bias] = plain[bias] + jnp.tanh(t / jnp.asarray(CLOCK)) @ w
        _, step = VsmlLearner(model).make(moved, xs.shape[1], 3)
        net, logits = step(net, xs[t], ys[t])
        manual.append(np.asarray(logits))
    np.testing.assert_allclose(clocked_logits, np.stack(manual), rtol=1e-5, atol=1e-5)
    assert not np.allclose(clocked_logits, episode_logits(model, plain, xs, ys), atol=1e-3)


def test_a_learner_without_a_clock_warm_starts_one_with_zero_clock_weights() -> None:
    plain, _ = read_learner_file(SHIPPED)
    config = load_experiment(GENERALIZATION, [f"training.init_params={SHIPPED}",
                                              "model.clock_timescales=[10, 100, 1000]"])
    check_init_params(config)  # accepted: the clock is the only difference
    learner = VsmlLearner(config.model)
    template = learner.init_params(jax.random.key(0), 64, 10)
    started = learner.warm_start(plain, template)
    np.testing.assert_array_equal(started[vsml.CLOCK_PARAM], np.zeros((3, 64)))
    for name, value in plain.items():
        np.testing.assert_array_equal(started[name], value)


@pytest.mark.parametrize("value", ["[0]", "[10, -1]"])
def test_a_timescale_that_is_not_positive_is_refused_before_work(tmp_path, capsys,
                                                                 value: str) -> None:
    out = tmp_path / "run"
    refused_before_work(["train", str(QUICKSTART), "--run-dir", str(out)], out,
                        [f"model.clock_timescales={value}"], "model.clock_timescales", capsys)
