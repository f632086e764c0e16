"""The fixed normalization constants of the official VSML code, for ``normalize: official``.

Why a table and not each dataset's own statistics: the paper's runs standardize every dataset
with these published numbers (``data.preprocess.dataset_stats`` in the official
``configs/default.yaml``), in pixel units of [0, 1], after resizing. Fashion-MNIST is
standardized with MNIST's numbers there; EMNIST, KMNIST, CIFAR-10, SVHN and Omniglot have
their own; the synthetic ``random`` and ``sum`` use 0 / 1. A dataset missing from the table
has no official constants (the official code fails on it), so asking for them is an error.
"""

from __future__ import annotations

from vsml_es.errors import DatasetError

# name -> (mean, std) of pixel values scaled to [0, 1], as published by the official code.
OFFICIAL_STATS: dict[str, tuple[float, float]] = {
    "mnist": (0.13066047430038452, 0.3081078827381134),
    "fashion_mnist": (0.13066047430038452, 0.3081078827381134),  # MNIST's, as in the code
    "emnist": (0.1739204376935959, 0.3319065570831299),
    # Computed officially on TFDS's default EMNIST (ByClass), which 'emnist_byclass' is.
    "emnist_byclass": (0.1739204376935959, 0.3319065570831299),
    "kmnist": (0.19176216423511505, 0.34834328293800354),
    "cifar10": (0.4733630120754242, 0.2515689432621002),
    "svhn_cropped": (0.4514186382293701, 0.19929124414920807),
    "omniglot": (0.9220603108406067, 0.26807650923728943),
    "random": (0.0, 1.0),
    "sum": (0.0, 1.0),
}


def official_stats(name: str, stored_uint8: bool) -> tuple[float, float]:
    """(mean, std) in stored units: uint8 pixels are 255 times the published [0, 1] values."""
    if name not in OFFICIAL_STATS:
        raise DatasetError(
            f"Dataset '{name}' has no official normalization constants (normalize: official); "
            f"those exist for {', '.join(sorted(OFFICIAL_STATS))}. Use normalize: dataset (its "
            "own statistics) for it."
        )
    mean, std = OFFICIAL_STATS[name]
    scale = 255.0 if stored_uint8 else 1.0
    return mean * scale, std * scale
