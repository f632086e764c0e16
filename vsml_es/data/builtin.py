"""Datasets that ship with installed packages or are generated: no download, ever."""

from __future__ import annotations

import numpy as np

from vsml_es.data.registry import ArrayDataset, DatasetError, register

# Fixed split rule for scikit-learn's digits: every 4th example (index % 4 == 3) is held out
# for meta-testing, the rest is meta-training data. Never changes, so results stay comparable.
DIGITS_HELDOUT_EVERY = 4


def _check_split(name: str, split: str, valid: tuple[str, ...]) -> None:
    if split not in valid:
        raise DatasetError(
            f"Dataset '{name}' has no split '{split}'. Valid splits: {', '.join(valid)}."
        )


@register("digits")
def load_digits(split: str, data_dir: str | None = None) -> ArrayDataset:
    """scikit-learn's 1797 real 8×8 handwritten digits (pixel values 0..16)."""
    from sklearn.datasets import load_digits as sk_load_digits

    _check_split("digits", split, ("train", "test", "all"))
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
