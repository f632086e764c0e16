"""Input preprocessing as pure, key-driven JAX functions (plus host-side class filtering).

Per example, in this order (as in the VSML paper's code): stored values to float → resize →
normalize → zero-pad to a common shape → flatten → per-episode pixel shuffle → per-episode
random projection. Shuffles and projections are drawn from the episode key ("fresh") or
picked from a fixed pool derived from ``pool_seed`` ("pool"), and only in a configurable
fraction of episodes; every worker rebuilds the same ones from the same keys.

The options live in :class:`vsml_es.config.PreprocessConfig` (frozen, hashable: usable as a
static jit argument). Class filtering changes the number of examples, so it runs once on the
host when a task is built.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import PreprocessConfig
from vsml_es.errors import ConfigError, DatasetError

NORMALIZE_MODES = ("dataset", "official", "example", "none")
TRANSFORM_MODES = ("none", "fresh", "pool")
_PROJECTION_TAG, _SHUFFLE_TAG = 1, 2


# ------------------------------------------------------------------------------------------
# Validation and shapes (plain Python: run before any work starts)


def validate_config(cfg: PreprocessConfig, path: str) -> None:
    """Value checks that need no data; ``path`` names the config section in messages."""

    def bad(key: str, message: str) -> ConfigError:
        return ConfigError(f"Config key '{path}.{key}' {message}")

    for key, value, valid in (("normalize", cfg.normalize, NORMALIZE_MODES),
                              ("projection", cfg.projection, TRANSFORM_MODES),
                              ("shuffle", cfg.shuffle, TRANSFORM_MODES)):
        if value not in valid:
            raise bad(key, f"is '{value}'; valid values: {', '.join(valid)}.")
    if cfg.resize and (len(cfg.resize) != 2 or min(cfg.resize) < 1):
        raise bad("resize", f"must be [HEIGHT, WIDTH] with positive sizes, got {list(cfg.resize)}.")
    if cfg.signal_length < 0:
        raise bad("signal_length", f"must be 0 (off) or positive, got {cfg.signal_length}.")
    if cfg.pad_to and min(cfg.pad_to) < 1:
        raise bad("pad_to", f"must hold positive sizes, got {list(cfg.pad_to)}.")
    for key, value in (("projection_fraction", cfg.projection_fraction),
                       ("shuffle_fraction", cfg.shuffle_fraction)):
        if not 0.0 <= value <= 1.0:
            raise bad(key, f"must be between 0 and 1, got {value}.")
    for key, value in (("projection_pool", cfg.projection_pool),
                       ("shuffle_pool", cfg.shuffle_pool)):
        if value < 1:
            raise bad(key, f"must be at least 1, got {value}.")
    if len(set(cfg.classes)) != len(cfg.classes) or any(c < 0 for c in cfg.classes):
        raise bad("classes", f"must list distinct class ids >= 0, got {list(cfg.classes)}.")
    if len(cfg.classes) == 1:
        raise bad("classes", "needs at least two classes to form a classification task.")


def validate_task_config(task, metatest) -> None:
    """Preprocessing and mixture checks for ``task`` (TaskConfig) and ``metatest``."""
    validate_config(task.preprocess, "task.preprocess")
    validate_config(metatest.preprocess, "metatest.preprocess")
    weights = task.mixture_weights
    if weights and len(weights) != len(task.mixture):
        raise ConfigError(
            f"Config key 'task.mixture_weights' has {len(weights)} entries for "
            f"{len(task.mixture)} datasets in 'task.mixture'; give one weight per dataset or "
            "none (equal weights)."
        )
    if weights and (min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError("Config key 'task.mixture_weights' needs non-negative weights with a "
                          f"positive sum, got {list(weights)}.")
    if any(not ref.partition(":")[0] for ref in task.mixture):
        raise ConfigError(f"Config key 'task.mixture' has an empty dataset name: "
                          f"{list(task.mixture)}.")


def output_shape(name: str, example_shape: tuple[int, ...],
                 cfg: PreprocessConfig) -> tuple[int, ...]:
    """Shape of one example after resize and padding (before flattening); checks they fit."""
    shape = tuple(example_shape)
    if cfg.signal_length and len(shape) == 1:
        return _padded(name, (cfg.signal_length,), cfg)
    if cfg.resize:
        if len(shape) != 3:
            raise DatasetError(
                f"Resizing needs image data (HEIGHT x WIDTH x CHANNELS); dataset '{name}' has "
                f"examples of shape {shape}. Remove the resize option for it."
            )
        shape = (*cfg.resize, shape[2])
    return _padded(name, shape, cfg)


def _padded(name: str, shape: tuple[int, ...], cfg: PreprocessConfig) -> tuple[int, ...]:
    if cfg.pad_to:
        if len(cfg.pad_to) != len(shape) or any(p < s for p, s in zip(cfg.pad_to, shape,
                                                                     strict=True)):
            raise DatasetError(
                f"Cannot pad dataset '{name}' examples of shape {shape} to {tuple(cfg.pad_to)}: "
                "padding needs the same number of dimensions, each at least as large."
            )
        shape = tuple(cfg.pad_to)
    return shape


def filter_classes(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...], num_classes: int,
                   name: str) -> tuple[np.ndarray, np.ndarray]:
    """Keep only ``classes`` (host side: it changes N), relabelled 0..k-1 in the given order."""
    if max(classes) >= num_classes:
        raise DatasetError(
            f"Class filter {list(classes)} names class {max(classes)}, but dataset '{name}' has "
            f"classes 0..{num_classes - 1}."
        )
    relabel = np.full(num_classes, -1, dtype=np.int32)
    relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
    keep = relabel[y] >= 0
    if not keep.any():
        raise DatasetError(f"Class filter {list(classes)} keeps no examples of '{name}'.")
    return x[keep], relabel[y[keep]]


# ------------------------------------------------------------------------------------------
# Per-example steps (traced inside the jitted episode scan)


def resize_image(x: jax.Array, size: tuple[int, int], antialias: bool = True) -> jax.Array:
    """Bilinear resize of one [H, W, C] image; antialiased when shrinking (area-like) unless
    ``antialias`` is off (the official code's plain bilinear, tf.image.resize's default)."""
    if tuple(x.shape[:2]) == tuple(size):
        return x
    return jax.image.resize(x, (*size, x.shape[2]), method="linear", antialias=antialias)


def normalize(x: jax.Array, mode: str, mean: float, std: float, stored_uint8: bool) -> jax.Array:
    """'dataset': (x - mean) / std with the dataset's train statistics (stored units);
    'official': the same with the official code's constants (the task puts them in mean/std);
    'example': zero mean, unit std per example; 'none': as stored (uint8 scaled to [0, 1])."""
    if mode in ("dataset", "official"):
        return (x - mean) / std
    if mode == "example":
        floor = 1.0 / math.sqrt(x.size)  # as tf.image.per_image_standardization
        return (x - jnp.mean(x)) / jnp.maximum(jnp.std(x), floor)
    return x / 255.0 if stored_uint8 else x


def pad_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Zero-pad at the end of every dimension (zero is the normalized mean)."""
    return jnp.pad(x, [(0, t - s) for s, t in zip(x.shape, shape, strict=True)])


def prepare_example(x: jax.Array, cfg: PreprocessConfig, mean: float, std: float) -> jax.Array:
    """One stored example → normalized, resized, padded, flattened float32 features."""
    stored_uint8 = x.dtype == jnp.uint8
    x = x.astype(jnp.float32)
    if cfg.signal_length and x.ndim == 1:
        if x.shape[0] != cfg.signal_length:
            x = jax.image.resize(x, (cfg.signal_length,), method="linear")
    elif cfg.resize:
        x = resize_image(x, tuple(cfg.resize), cfg.antialias)
    x = normalize(x, cfg.normalize, mean, std, stored_uint8)
    if cfg.pad_to:
        x = pad_to_shape(x, tuple(cfg.pad_to))
    return x.reshape(-1)


# ------------------------------------------------------------------------------------------
# Per-episode input transforms


class InputTransform(NamedTuple):
    """What one episode does to every flattened input; ``None`` fields are switched off."""

    permutation: jax.Array | None  # [F] int32 (identity in unshuffled episodes)
    projection: jax.Array | None  # [F, F] float32
    project: jax.Array | None  # bool scalar: this episode is projected


def has_transforms(cfg: PreprocessConfig) -> bool:
    return cfg.shuffle != "none" or cfg.projection != "none"


def glorot_uniform(key: jax.Array, n_in: int, n_out: int) -> jax.Array:
    """U(-l, l) with l = sqrt(6 / (n_in + n_out)), as the paper's random projections."""
    limit = math.sqrt(6.0 / (n_in + n_out))
    return jax.random.uniform(key, (n_in, n_out), jnp.float32, -limit, limit)


def _transform_key(key: jax.Array, mode: str, pool: int, seed: int, tag: int) -> jax.Array:
    """A fresh key per episode, or the key of one of ``pool`` fixed members."""
    if mode == "fresh":
        return key
    member = jax.random.randint(key, (), 0, pool)
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), tag), member)


def episode_transform(key: jax.Array, cfg: PreprocessConfig, num_features: int) -> InputTransform:
    """Draw this episode's pixel shuffle and projection (each only in its fraction of episodes)."""
    k_shuffle, k_use_shuffle, k_proj, k_use_proj = jax.random.split(key, 4)
    permutation = projection = project = None
    if cfg.shuffle != "none":
        k = _transform_key(k_shuffle, cfg.shuffle, cfg.shuffle_pool, cfg.pool_seed, _SHUFFLE_TAG)
        shuffled = jax.random.permutation(k, num_features)
        use = jax.random.uniform(k_use_shuffle) < cfg.shuffle_fraction
        permutation = jnp.where(use, shuffled, jnp.arange(num_features)).astype(jnp.int32)
    if cfg.projection != "none":
        k = _transform_key(k_proj, cfg.projection, cfg.projection_pool, cfg.pool_seed,
                           _PROJECTION_TAG)
        projection = glorot_uniform(k, num_features, num_features)
        project = jax.random.uniform(k_use_proj) < cfg.projection_fraction
    return InputTransform(permutation, projection, project)


def apply_transform(x: jax.Array, transform: InputTransform) -> jax.Array:
    if transform.permutation is not None:
        x = x[transform.permutation]
    if transform.projection is not None:
        x = jnp.where(transform.project, x @ transform.projection, x)
    return x


SMALL_DATASET = 4096  # up to this size, sample via a full permutation (the original streams)


def sample_without_replacement(key: jax.Array, n: int, k: int) -> jax.Array:
    """``k`` distinct indices of ``range(n)`` in uniformly random order.

    A full permutation sorts all n indices (hundreds of ms per episode at n = 60000 on a CPU,
    more than the VSML evaluation itself), so larger datasets use Floyd's algorithm (O(k^2),
    independent of n) followed by a shuffle of the k picks.
    """
    if n <= SMALL_DATASET:
        return jax.random.permutation(key, n)[:k]
    k_pick, k_order = jax.random.split(key)
    last = jnp.arange(n - k, n)
    proposals = jax.random.randint(k_pick, (k,), 0, last + 1)

    def pick(chosen: jax.Array, i: jax.Array) -> tuple[jax.Array, None]:
        t = proposals[i]
        return chosen.at[i].set(jnp.where(jnp.any(chosen == t), last[i], t)), None

    chosen, _ = jax.lax.scan(pick, jnp.full((k,), -1, last.dtype), jnp.arange(k))
    return chosen[jax.random.permutation(k_order, k)]


def permute_labels(key: jax.Array, num_classes: int) -> jax.Array:
    """A fresh label permutation for one episode (the task must be learned, not recalled)."""
    return jax.random.permutation(key, num_classes).astype(jnp.int32)
