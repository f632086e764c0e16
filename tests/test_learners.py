"""Learners: each one learns within an episode, and SGD/Adam equal a plain optax loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsml_es.config import Config, load_config
from vsml_es.data import ArrayDataset
from vsml_es.episodes import online_episode
from vsml_es.errors import ConfigError
from vsml_es.experiment import load_experiment
from vsml_es.learners import LEARNERS, build_learner
from vsml_es.learners.gradient import GradientLearner, init_mlp
from vsml_es.tasks import make_task

# The flat-input gradient baselines (the conv ones need images: tests/test_conv_baseline.py).
GRADIENT = sorted(name for name, entry in LEARNERS.items() if not entry.meta_learned
                  and not entry.build(load_config(None, [])).takes_input_shape)


def clusters(num_classes: int, features: int = 8, n: int = 2000, minority: float | None = None,
             seed: int = 0) -> ArrayDataset:
    """Well separated Gaussian clusters; ``minority`` makes a 2-class set imbalanced."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, features)) * 3.0
    if minority is None:
        y = rng.integers(0, num_classes, n)
    else:
        y = (rng.random(n) < minority).astype(int)
    x = centers[y] + rng.normal(size=(n, features))
    return ArrayDataset("clusters", "train", x.astype(np.float32), y.astype(np.int32),
                        num_classes, 0.0, 1.0)


def rise(accuracy: np.ndarray) -> tuple[float, float]:
    """Mean accuracy over episodes in the first 4 steps (near chance: labels are permuted per
    episode) and in the last third of the episode."""
    third = accuracy.shape[1] // 3
    return float(accuracy[:, :4].mean()), float(accuracy[:, -third:].mean())


def run_learner(init, step, task, data, episodes: int = 32) -> np.ndarray:
    keys = jax.random.split(jax.random.key(3), episodes)
    _, correct = jax.jit(jax.vmap(lambda k: online_episode(init, step, k, data, task)))(keys)
    return np.asarray(correct)


@pytest.mark.parametrize("name", ["hebbian", "fwm"])
def test_fast_weight_learners_learn_from_their_initial_parameters(name: str) -> None:
    # Labels are permuted per episode: anything above chance late in the episode was learned
    # inside it.
    task, data = make_task(clusters(4), 60, 4, permute_labels=True)
    learner = build_learner(name, load_config(None, ["model.baseline_hidden=32"]))
    params = learner.init_params(jax.random.key(0), task.num_features, task.num_outputs)
    first, last = rise(run_learner(*learner.make(params, task.num_features, 4), task, data))
    assert last > 0.8 and last > first + 0.3, (first, last)


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_baselines_learn(name: str) -> None:
    task, data = make_task(clusters(4), 60, 4, permute_labels=True)
    learner = build_learner(name, load_config(None, ["metatest.mlp_hidden=32"]))
    lr = 0.03 if learner.optimizer == "sgd" else 0.01
    fns = learner.make({"learning_rate": jnp.float32(lr)}, task.num_features, 4)
    first, last = rise(run_learner(*fns, task, data))
    assert last > 0.8 and last > first + 0.3, (first, last)


def reference_logits(optimizer: optax.GradientTransformation, params, xs, ys) -> np.ndarray:
    """Plain Python loop: predict, then one optax step on the cross-entropy."""

    def forward(p, x):
        for w, b in p[:-1]:
            x = jnp.maximum(x @ w + b, 0.0)
        return x @ p[-1][0] + p[-1][1]

    def loss(p, x, y):
        return -jax.nn.log_softmax(forward(p, x))[y]

    grad, update = jax.jit(jax.grad(loss)), jax.jit(optimizer.update)
    opt_state = optimizer.init(params)
    out = []
    for x, y in zip(xs, ys, strict=True):
        out.append(np.asarray(forward(params, x)))
        updates, opt_state = update(grad(params, x, y), opt_state, params)
        params = optax.apply_updates(params, updates)
    return np.stack(out)


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_baselines_match_plain_optax_loop(name: str) -> None:
    baseline = build_learner(name, load_config(None, ["metatest.mlp_hidden=7"]))
    assert isinstance(baseline, GradientLearner)
    task, data = make_task(clusters(3, features=5), 15, 3, permute_labels=True)
    lr, hidden = 0.05, 7
    init, step = baseline.make({"learning_rate": lr}, task.num_features, 3)
    key = jax.random.key(11)
    k_spec, k_learner = jax.random.split(key)  # as online_episode splits it
    spec = task.episode(k_spec)
    xs, ys = zip(*(task.example(data, spec, t) for t in range(task.episode_length)), strict=True)

    state, step_jit = init(k_learner), jax.jit(step)
    logits = []
    for x, y in zip(xs, ys, strict=True):
        state, lg = step_jit(state, x, y)
        logits.append(np.asarray(lg))
    sizes = (5, hidden, 3) if baseline.hidden else (5, 3)
    opt = optax.sgd(lr) if baseline.optimizer == "sgd" else optax.adam(lr)
    expected = reference_logits(opt, init_mlp(k_learner, sizes), xs, ys)
    np.testing.assert_allclose(np.stack(logits), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected[-1]).max() > 0.1  # it did move away from the zero output layer

    # The episode runner gives the same predictions as stepping by hand.
    losses, _ = online_episode(init, step, key, data, task)
    ce = -jax.nn.log_softmax(jnp.asarray(expected), axis=-1)[jnp.arange(15), jnp.stack(ys)]
    np.testing.assert_allclose(np.asarray(losses), np.asarray(ce), rtol=1e-4, atol=1e-5)


def test_every_baseline_meta_learner_has_task_sized_flat_params() -> None:
    # Flat dicts of arrays: what ES, the npz parameter files and checkpoints handle.
    meta = [name for name, entry in LEARNERS.items() if entry.meta_learned]
    assert set(meta) >= {"vsml", "hebbian", "meta_rnn", "fwm"}
    for name in sorted(set(meta) - {"vsml"}):  # VSML's sizes: tests/test_core_network.py
        learner = build_learner(name, Config())
        small = learner.init_params(jax.random.key(0), 12, 5)
        large = learner.init_params(jax.random.key(0), 30, 5)
        assert isinstance(small, dict) and set(small) == set(large)
        assert all(isinstance(v, jax.Array) for v in small.values())
        assert sum(v.size for v in large.values()) > sum(v.size for v in small.values())


def test_unknown_learner_and_baseline_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'meta_rnn'"):
        load_experiment(None, ["model.learner=metarnn"])
    with pytest.raises(ConfigError, match=r"metatest.baselines\[1\].*adam_mlp"):
        load_experiment(None, ["metatest.baselines=[sgd, adam_mpl]"])
    with pytest.raises(ConfigError, match="compare.learners"):
        load_experiment(None, ["compare.learners=[vsml, hebian]"])
    with pytest.raises(ConfigError, match="adam_learning_rates"):
        load_experiment(None, ["metatest.adam_learning_rates=[0.01, -1]"])
    # A tuned learner cannot be meta-learned, nor a meta-learner tuned.
    with pytest.raises(ConfigError, match="model.learner"):
        load_experiment(None, ["model.learner=sgd"])
    with pytest.raises(ConfigError, match=r"metatest.baselines\[0\]"):
        load_experiment(None, ["metatest.baselines=[vsml]"])
