"""Name → loader registry. One call loads a split as numpy arrays."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A dataset name, split or preparation problem, phrased for the user."""


@dataclass(frozen=True)
class ArrayDataset:
    """One split of a dataset, small enough to keep in memory (and on device).

    ``x`` keeps the stored dtype (uint8 pixels stay uint8); ``mean``/``std`` are the
    dataset-standard normalization statistics applied on device as ``(x - mean) / std``.
    """

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    mean: float
    std: float
    info: dict = field(default_factory=dict)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_features(self) -> int:
        return int(np.prod(self.x.shape[1:]))

    def __len__(self) -> int:
        return int(self.x.shape[0])


Loader = Callable[[str, "str | None"], ArrayDataset]
_LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return wrap


def dataset_names() -> list[str]:
    _ensure_builtins()
    return sorted(_LOADERS)


def load_dataset(name: str, split: str = "train", data_dir: str | None = None) -> ArrayDataset:
    """Load ``split`` of dataset ``name`` as numpy arrays; errors name the valid choices."""
    _ensure_builtins()
    if name not in _LOADERS:
        close = difflib.get_close_matches(name, list(_LOADERS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DatasetError(
            f"Unknown dataset '{name}'.{hint} Available datasets: {', '.join(sorted(_LOADERS))}."
        )
    return _LOADERS[name](split, data_dir)


def _ensure_builtins() -> None:
    # Imported lazily so that importing the registry stays cheap.
    from vsml_es.data import builtin  # noqa: F401
