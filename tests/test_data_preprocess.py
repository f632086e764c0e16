"""On-device preprocessing, per-episode transforms, label permutation and dataset mixtures."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml_es import preprocess as pre
from vsml_es.config import PreprocessConfig
from vsml_es.data import ArrayDataset, DatasetError
from vsml_es.episodes import online_episode
from vsml_es.errors import ConfigError
from vsml_es.experiment import load_experiment
from vsml_es.tasks import build_task, load_mixture_task, load_task, make_task


def image_dataset(n: int = 60, shape=(12, 12, 1), classes: int = 5, seed: int = 0,
                  dtype=np.uint8) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape)).astype(dtype)
    y = (np.arange(n) % classes).astype(np.int32)
    return ArrayDataset("img", "train", x, y, num_classes=classes, mean=float(x.mean()),
                        std=float(x.std()))


@partial(jax.jit, static_argnums=0)
def _episode(task, data, key):
    spec = task.episode(key)
    return jax.vmap(lambda t: task.example(data, spec, t))(jnp.arange(task.episode_length))


def features(task, data, key) -> tuple[np.ndarray, np.ndarray]:
    """All (x, y) of one episode, as the jitted scan produces them (compiled once per task)."""
    x, y = _episode(task, data, key)
    return np.asarray(x), np.asarray(y)


def test_default_preprocessing_is_the_plain_dataset_normalization():
    ds = image_dataset()
    task, data = make_task(ds, 10, 10, permute_labels=False)
    spec = task.episode(jax.random.key(1))
    x, y = task.example(data, spec, 3)
    i = int(spec.indices[3])
    expected = (jnp.asarray(ds.x[i]).astype(jnp.float32).reshape(-1) - task.mean) / task.std
    np.testing.assert_array_equal(x, expected)  # bit for bit: the pre-existing formula
    assert int(y) == ds.y[i] and task.num_features == 144 and spec.transform is None


def test_episodes_are_a_pure_function_of_the_key():
    cfg = PreprocessConfig(resize=(6, 6), shuffle="fresh", projection="pool",
                           projection_fraction=0.5)
    task, data = make_task(image_dataset(), 20, 10, True, cfg)
    a, b = features(task, data, jax.random.key(5)), features(task, data, jax.random.key(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = features(task, data, jax.random.key(6))
    assert not np.array_equal(a[0], c[0])


def test_resize_shrinks_images_and_keeps_smooth_content():
    ramp = np.tile(np.linspace(0, 240, 28, dtype=np.float32), (28, 1))[..., None]
    small = pre.resize_image(jnp.asarray(ramp), (7, 7))
    assert small.shape == (7, 7, 1)
    np.testing.assert_allclose(small[0, :, 0], small[6, :, 0])  # rows stay equal
    assert np.all(np.diff(np.asarray(small[0, :, 0])) > 0)  # still increasing
    np.testing.assert_allclose(small.mean(), ramp.mean(), rtol=1e-3)
    np.testing.assert_array_equal(pre.resize_image(jnp.asarray(ramp), (28, 28)), ramp)
    task, _ = make_task(image_dataset(shape=(28, 28, 1)), 5, 10, True,
                        PreprocessConfig(resize=(8, 8)))
    assert task.num_features == 64


def test_normalization_modes():
    x = jnp.asarray(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10)
    example = pre.prepare_example(x, PreprocessConfig(normalize="example"), 0.0, 1.0)
    assert float(example.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(example.std()) == pytest.approx(1.0, abs=1e-5)
    raw = pre.prepare_example(x, PreprocessConfig(normalize="none"), 0.0, 1.0)
    np.testing.assert_allclose(raw, np.asarray(x, np.float32).reshape(-1) / 255.0)
    dataset = pre.prepare_example(x, PreprocessConfig(), 75.0, 5.0)
    np.testing.assert_allclose(dataset, (np.asarray(x, np.float32).reshape(-1) - 75) / 5)


def test_pad_to_a_common_shape_and_its_errors():
    x = jnp.ones((3, 4, 1))
    padded = pre.pad_to_shape(x, (5, 5, 2))
    assert padded.shape == (5, 5, 2) and float(padded.sum()) == 12.0
    assert float(padded[:3, :4, 0].min()) == 1.0
    assert pre.output_shape("a", (28, 28, 1), PreprocessConfig(pad_to=(32, 32, 3))) == (32, 32, 3)
    with pytest.raises(DatasetError, match="Cannot pad dataset 'a'"):
        pre.output_shape("a", (32, 32, 3), PreprocessConfig(pad_to=(28, 28, 1)))
    with pytest.raises(DatasetError, match="Resizing needs image data.*'m1d'"):
        pre.output_shape("m1d", (40,), PreprocessConfig(resize=(8, 8)))


def test_class_filter_keeps_and_relabels_the_chosen_classes():
    ds = image_dataset(classes=5)
    task, data = make_task(ds, 8, 10, False, PreprocessConfig(classes=(3, 1)))
    assert task.dataset_classes == 2 and task.num_examples == 24
    kept = np.isin(ds.y, [3, 1])
    np.testing.assert_array_equal(np.asarray(data.x), ds.x[kept])
    np.testing.assert_array_equal(np.asarray(data.y), np.where(ds.y[kept] == 3, 0, 1))
    with pytest.raises(DatasetError, match="names class 7.*classes 0..4"):
        make_task(ds, 8, 10, False, PreprocessConfig(classes=(0, 7)))


def test_label_permutation_is_fresh_per_episode():
    task, _ = make_task(image_dataset(classes=5), 8, 10, True)
    perms = {tuple(np.asarray(task.episode(jax.random.key(k)).label_perm)) for k in range(20)}
    assert len(perms) > 5 and all(sorted(p) == list(range(5)) for p in perms)
    fixed, _ = make_task(image_dataset(classes=5), 8, 10, False)
    assert tuple(np.asarray(fixed.episode(jax.random.key(0)).label_perm)) == (0, 1, 2, 3, 4)


def _transforms(cfg: PreprocessConfig, n: int = 64, episodes: int = 200) -> pre.InputTransform:
    keys = jax.random.split(jax.random.key(0), episodes)
    batch = jax.jit(jax.vmap(lambda k: pre.episode_transform(k, cfg, n)))(keys)
    return jax.tree.map(np.asarray, batch)


def test_fresh_shuffles_and_projections_differ_per_episode():
    t = _transforms(PreprocessConfig(shuffle="fresh", projection="fresh"), episodes=8)
    limit = math.sqrt(6 / 128)
    w = t.projection
    assert w.shape == (8, 64, 64) and np.abs(w).max() <= limit  # Glorot-uniform
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert len({m.tobytes() for m in w}) == 8 and t.project.all()
    assert all(sorted(p) == list(range(64)) for p in t.permutation)
    assert len({p.tobytes() for p in t.permutation}) == 8


def test_fixed_pools_and_fractions():
    t = _transforms(PreprocessConfig(shuffle="pool", shuffle_pool=2, shuffle_fraction=0.5,
                                     projection="pool", projection_pool=3,
                                     projection_fraction=0.25))
    assert len({w.tobytes() for w in t.projection}) == 3
    assert 0.15 < t.project.mean() < 0.35
    identity = (t.permutation == np.arange(64)).all(axis=1)
    assert 0.35 < identity.mean() < 0.65
    assert len({p.tobytes() for p in t.permutation[~identity]}) == 2
    x = jnp.arange(64, dtype=jnp.float32)
    off = pre.InputTransform(None, jnp.asarray(t.projection[0]), jnp.asarray(False))
    np.testing.assert_array_equal(pre.apply_transform(x, off), x)
    on = pre.InputTransform(jnp.asarray(t.permutation[~identity][0]), None, None)
    np.testing.assert_array_equal(pre.apply_transform(x, on), t.permutation[~identity][0])


def test_mixture_draws_datasets_by_weight_and_runs_inside_online_episodes():
    cfg = PreprocessConfig(resize=(8, 8), projection="pool", projection_pool=2)
    task, data = load_mixture_task(("digits:train", "random:train"), (1.0, 3.0), "train", 6, 10,
                                   True, None, cfg)
    assert task.num_features == 64 and len(data) == 2
    keys = jax.random.split(jax.random.key(0), 400)
    choices = np.asarray(jax.jit(jax.vmap(lambda k: task.episode(k).choice))(keys))
    assert 0.15 < (choices == 0).mean() < 0.35

    # A population of episodes (vmap over keys, scan over steps), as the evaluator runs them.
    def step(state, x, y):
        return state + x.sum(), x[:10]

    @jax.jit
    def population(keys):
        return jax.vmap(lambda k: online_episode(lambda _: 0.0, step, k, data, task))(keys)

    losses, correct = population(keys[:4])
    assert losses.shape == (4, 6) and bool(jnp.isfinite(losses).all())


def test_mixture_of_different_input_sizes_is_refused():
    with pytest.raises(DatasetError, match="different input sizes.*resize"):
        load_mixture_task(("digits:train", "random:train"), (), "train", 6, 10)


def test_config_rejects_bad_preprocessing_values():
    with pytest.raises(ConfigError, match="'task.preprocess.projection' is 'random'"):
        load_experiment(None, ["task.preprocess.projection=random"])
    with pytest.raises(ConfigError, match="'metatest.preprocess.shuffle_fraction' must be"):
        load_experiment(None, ["metatest.preprocess.shuffle_fraction=1.5"])
    with pytest.raises(ConfigError, match="'task.preprocess.resize' must be"):
        load_experiment(None, ["task.preprocess.resize=[8]"])
    with pytest.raises(ConfigError, match="'task.mixture_weights' has 1 entries for 2"):
        load_experiment(None, ["task.mixture=[digits, random]", "task.mixture_weights=[1]"])
    with pytest.raises(ConfigError, match="'task.preprocess.classes' needs at least two"):
        load_experiment(None, ["task.preprocess.classes=[3]"])


def test_build_task_follows_the_config():
    config = load_experiment(None, ["task.dataset=random", "task.preprocess.resize=[8,8]",
                                "task.preprocess.pad_to=[9,9,1]"])
    task, _ = build_task(config.task)
    assert task.num_features == 81 and task.name == "random:train"


def test_metatest_inputs_are_resized_to_the_trained_size():
    cfg = PreprocessConfig(resize=(8, 8))
    task, _ = load_task("random", "test", 5, 10, num_features=64, preprocess=cfg)
    assert task.num_features == 64
    with pytest.raises(DatasetError, match="784 input features.*metatest.preprocess.resize"):
        load_task("random", "test", 5, 10, num_features=64)


def test_sampling_without_replacement_on_large_datasets():
    keys = jax.random.split(jax.random.key(0), 300)
    draw = jax.jit(jax.vmap(lambda k: pre.sample_without_replacement(k, 60000, 50)))
    picks = np.asarray(draw(keys))
    assert all(len(set(row)) == 50 for row in picks) and picks.min() >= 0 and picks.max() < 60000
    # Uniform over the dataset and over positions: no index range or slot is favoured.
    assert 0.45 < (picks < 30000).mean() < 0.55
    assert 0.4 < (picks[:, -1] < 30000).mean() < 0.6
    small = pre.sample_without_replacement(jax.random.key(3), 1000, 20)  # the original stream
    np.testing.assert_array_equal(small, jax.random.permutation(jax.random.key(3), 1000)[:20])
