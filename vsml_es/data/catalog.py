"""Every registered dataset by name: look one up, load a split as numpy arrays, prepare it.

Importing this module registers the providers (built-in datasets, TFDS ArrayRecord datasets);
neither imports TFDS itself until a dataset of theirs is prepared or loaded.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import vsml_es.data.builtin  # noqa: F401  (importing a provider registers its datasets)
import vsml_es.data.tfds_store  # noqa: F401
from vsml_es.data.registry import (
    _SPECS,
    ArrayDataset,
    DatasetSpec,
    DatasetStatus,
    resolve_data_dir,
)
from vsml_es.errors import DatasetError, did_you_mean


def dataset_names() -> list[str]:
    return sorted(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    """The registered spec; an unknown name lists every valid one."""
    if name not in _SPECS:
        raise DatasetError(
            f"Unknown dataset '{name}'.{did_you_mean(name, _SPECS)} Available datasets: "
            f"{', '.join(sorted(_SPECS))}. "
            "Run 'vsml-es data list' to see which are ready and how to get the others."
        )
    return _SPECS[name]


def dataset_status(name: str, data_dir: str | os.PathLike | None = None) -> DatasetStatus:
    spec = get_spec(name)
    if spec.status is None:
        return DatasetStatus(True, spec.source)
    return spec.status(resolve_data_dir(data_dir))


def load_dataset(name: str, split: str = "train",
                 data_dir: str | os.PathLike | None = None) -> ArrayDataset:
    """Load ``split`` of dataset ``name`` as numpy arrays; errors name the valid choices.

    Results are cached per process (workers load each split once); the arrays are read-only.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise DatasetError(
            f"Dataset '{name}' has no split '{split}'. Valid splits: {', '.join(spec.splits)}."
        )
    return _load_cached(name, split, str(resolve_data_dir(data_dir)))


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, split: str, data_dir: str) -> ArrayDataset:
    dataset = _SPECS[name].loader(split, Path(data_dir))
    dataset.x.setflags(write=False)
    dataset.y.setflags(write=False)
    return dataset


def prepare_dataset(name: str, data_dir: str | os.PathLike | None = None,
                    manual_dir: str | os.PathLike | None = None, download: bool = False,
                    progress: bool = False) -> str:
    """Make ``name`` loadable offline; idempotent. Returns a one-line report."""
    spec = get_spec(name)
    if spec.prepare is None:
        return f"{name}: {spec.source}; nothing to prepare."
    manual = Path(manual_dir).expanduser().absolute() if manual_dir else None
    target = resolve_data_dir(data_dir)
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise DatasetError(f"The data dir '{target}' lies at or under '{existing}', which is a "
                           "file; set --data-dir or $VSML_ES_DATA_DIR to a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DatasetError(f"The data dir '{target}' cannot be written (no write permission on "
                           f"'{existing}'); set --data-dir or $VSML_ES_DATA_DIR to a directory "
                           "you can write.")
    report = spec.prepare(target, manual, download, progress)
    _load_cached.cache_clear()
    return report
