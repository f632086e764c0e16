"""Datasets that ship with installed packages or are generated: no download, ever.

``random`` and ``sum`` follow the synthetic tasks of the VSML paper's public code:

* ``random``: a fixed set of 20 inputs ``x ~ N(0, 1)`` of shape 28×28×1 with labels drawn
  uniformly from 10 classes; episodes cycle through them, so the task is pure memorization.
  The paper's code draws one such set per run; here each split is drawn from its own fixed
  seed, so 'train' and 'test' are two different memorization tasks.
* ``sum``: each example is drawn from a normal distribution truncated at two standard
  deviations, with standard deviation 1 and a per-example mean ``m ~ U(-1, 1)``, shape
  28×28×1; the label is 1 when the sum of the inputs is >= 0, else 0. The paper's code streams
  fresh examples; here each split is a fixed draw (10,000 train, 2,000 test) from a fixed seed.

Both use the paper's normalization stats (mean 0, std 1).

``linear_teacher`` is not from the paper: a stream that keeps rewarding learning for thousands
of steps, as Fashion-MNIST does, while digits and ``random`` are learned within a few hundred.
Inputs ``x ~ N(0, 1)`` of shape 8×8×1; each label is drawn from the softmax of a fixed random
linear teacher's logits ``4 · W x / 8`` (``W ~ N(0, 1)``, 10 classes), so the best possible
accuracy, the teacher's own argmax, is about 74 % (74.2 % train, 74.6 % test) and online SGD
is still gaining at step 2000, where a constant step size sits on a noise floor that a
decaying one goes below. Both splits share the teacher.
"""

from __future__ import annotations

import functools
import random as pyrandom
from pathlib import Path

import numpy as np

from vsml_es.data.registry import ArrayDataset, register

# Fixed split rule for scikit-learn's digits: every 4th example (index % 4 == 3) is held out
# for meta-testing, the rest is meta-training data. Never changes, so results stay comparable.
DIGITS_HELDOUT_EVERY = 4

SYNTH_SHAPE = (28, 28, 1)
RANDOM_SIZE = 20
RANDOM_CLASSES = 10
SUM_SIZES = {"train": 10000, "test": 2000}
LINEAR_SHAPE = (8, 8, 1)
LINEAR_CLASSES = 10
LINEAR_SIZES = {"train": 20000, "test": 4000}
LINEAR_SHARPNESS = 4.0  # teacher logits' scale: sets the best possible accuracy (~74 %)
_SEEDS = {("random", "train"): 1001, ("random", "test"): 1002,
          ("sum", "train"): 2001, ("sum", "test"): 2002,
          ("linear_teacher", "teacher"): 3000,
          ("linear_teacher", "train"): 3001, ("linear_teacher", "test"): 3002}


@register("digits", description="scikit-learn's 1797 real 8x8 handwritten digits",
          num_classes=10, example_shape=(8, 8, 1), splits=("train", "test", "all"),
          source="built in (scikit-learn)")
def load_digits(split: str, data_dir: Path | None = None) -> ArrayDataset:
    """scikit-learn's 1797 real 8×8 handwritten digits (pixel values 0..16)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = bunch.images.astype(np.uint8)[..., None]  # [N, 8, 8, 1], values 0..16
    y = bunch.target.astype(np.int32)
    index = np.arange(len(y))
    heldout = index % DIGITS_HELDOUT_EVERY == DIGITS_HELDOUT_EVERY - 1
    train_x = x[~heldout]
    mean, std = float(train_x.mean()), float(train_x.std())
    if split == "train":
        x, y = x[~heldout], y[~heldout]
    elif split == "test":
        x, y = x[heldout], y[heldout]
    return ArrayDataset("digits", split, x, y, num_classes=10, mean=mean, std=std,
                        info={"source": "sklearn.datasets.load_digits"})


@functools.cache
def _mnist1d_arrays() -> dict[str, np.ndarray]:
    """The published MNIST-1D (default arguments, seed 42), generated once per process.

    ``make_dataset`` seeds numpy's and Python's global generators; both are restored after,
    so loading it never changes anyone else's random stream.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), pyrandom.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        pyrandom.setstate(py_state)
    return {"train_x": np.asarray(data["x"], dtype=np.float32),
            "train_y": np.asarray(data["y"], dtype=np.int32),
            "test_x": np.asarray(data["x_test"], dtype=np.float32),
            "test_y": np.asarray(data["y_test"], dtype=np.int32)}


@register("mnist1d", description="MNIST-1D: 40-sample 1-D signals of 10 digit templates",
          num_classes=10, example_shape=(40,), source="generated (mnist1d package, no download)")
def load_mnist1d(split: str, data_dir: Path | None = None) -> ArrayDataset:
    """MNIST-1D's 4000/1000 train/test split, generated offline (never its download)."""
    arrays = _mnist1d_arrays()
    train_x = arrays["train_x"]
    return ArrayDataset("mnist1d", split, arrays[f"{split}_x"].copy(),
                        arrays[f"{split}_y"].copy(), num_classes=10,
                        mean=float(train_x.mean()), std=float(train_x.std()),
                        info={"source": "mnist1d.data.make_dataset"})


@register("random", description="20 fixed N(0,1) 28x28 inputs with random labels (memorize)",
          num_classes=RANDOM_CLASSES, example_shape=SYNTH_SHAPE, source="generated")
def load_random(split: str, data_dir: Path | None = None) -> ArrayDataset:
    rng = np.random.default_rng(_SEEDS["random", split])
    x = rng.standard_normal((RANDOM_SIZE, *SYNTH_SHAPE), dtype=np.float32)
    y = rng.integers(0, RANDOM_CLASSES, size=RANDOM_SIZE).astype(np.int32)
    return ArrayDataset("random", split, x, y, num_classes=RANDOM_CLASSES, mean=0.0, std=1.0,
                        info={"source": "generated", "seed": _SEEDS["random", split]})


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal samples redrawn until inside [-2, 2] (as TensorFlow truncates)."""
    z = rng.standard_normal(shape, dtype=np.float32)
    while (bad := np.abs(z) > 2).any():
        z[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
    return z


@register("sum", description="is the sum of a truncated-normal 28x28 input >= 0? (2 classes)",
          num_classes=2, example_shape=SYNTH_SHAPE, source="generated")
def load_sum(split: str, data_dir: Path | None = None) -> ArrayDataset:
    rng = np.random.default_rng(_SEEDS["sum", split])
    n = SUM_SIZES[split]
    means = rng.uniform(-1.0, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
    x = truncated_normal(rng, (n, *SYNTH_SHAPE)) + means
    y = (x.sum(axis=(1, 2, 3), dtype=np.float64) >= 0).astype(np.int32)
    return ArrayDataset("sum", split, x, y, num_classes=2, mean=0.0, std=1.0,
                        info={"source": "generated", "seed": _SEEDS["sum", split]})


@register("linear_teacher", description="N(0,1) 8x8 inputs, labels sampled from a fixed random "
          "linear teacher's softmax (best accuracy ~74 %: slow, noisy, still learnable at step "
          "2000)", num_classes=LINEAR_CLASSES, example_shape=LINEAR_SHAPE, source="generated")
def load_linear_teacher(split: str, data_dir: Path | None = None) -> ArrayDataset:
    features = int(np.prod(LINEAR_SHAPE))
    teacher = np.random.default_rng(_SEEDS["linear_teacher", "teacher"]).standard_normal(
        (features, LINEAR_CLASSES))
    rng = np.random.default_rng(_SEEDS["linear_teacher", split])
    n = LINEAR_SIZES[split]
    x = rng.standard_normal((n, features))
    logits = LINEAR_SHARPNESS * (x @ teacher) / np.sqrt(features)
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int32)
    return ArrayDataset("linear_teacher", split, x.astype(np.float32).reshape(n, *LINEAR_SHAPE),
                        y, num_classes=LINEAR_CLASSES, mean=0.0, std=1.0,
                        info={"source": "generated", "seed": _SEEDS["linear_teacher", split],
                              "teacher_seed": _SEEDS["linear_teacher", "teacher"]})
