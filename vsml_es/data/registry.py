"""The dataset registry's types and table: what a dataset provider registers.

Each dataset registers a loader plus static metadata (classes, example shape, splits), so
``vsml-es data list`` and config validation can describe a dataset without loading it. The
providers (``builtin``, ``tfds_store``) import this module to register; ``catalog`` imports
the providers and answers lookups, so imports only go one way.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "VSML_ES_DATA_DIR"


@dataclass(frozen=True)
class ArrayDataset:
    """One split of a dataset, small enough to keep in memory (and on device).

    ``x`` keeps the stored dtype (uint8 pixels stay uint8); ``mean``/``std`` are the
    dataset-standard normalization statistics applied on device as ``(x - mean) / std``.
    Arrays returned by :func:`load_dataset` are shared between callers and read-only.
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


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be loaded now, and where it is or how to get it."""

    available: bool
    detail: str


Loader = Callable[[str, Path], ArrayDataset]
StatusFn = Callable[[Path], DatasetStatus]
# (data_dir, manual_dir, download, progress) -> a one-line report of what was done
PrepareFn = Callable[[Path, "Path | None", bool, bool], str]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    num_classes: int
    example_shape: tuple[int, ...]
    splits: tuple[str, ...]
    source: str  # where the data comes from, for `data list`
    loader: Loader
    status: StatusFn | None = None  # None: always available (built in or generated)
    prepare: PrepareFn | None = None  # None: nothing to prepare


_SPECS: dict[str, DatasetSpec] = {}


def register(name: str, *, description: str, num_classes: int,
             example_shape: tuple[int, ...], splits: tuple[str, ...] = ("train", "test"),
             source: str = "built in", status: StatusFn | None = None,
             prepare: PrepareFn | None = None) -> Callable[[Loader], Loader]:
    """Register ``loader(split, data_dir)`` under ``name`` with its static metadata."""

    def wrap(fn: Loader) -> Loader:
        _SPECS[name] = DatasetSpec(name, description, num_classes, tuple(example_shape),
                                   tuple(splits), source, fn, status, prepare)
        return fn

    return wrap


def default_data_dir() -> Path:
    """``$VSML_ES_DATA_DIR`` or ``~/vsml_es_data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / "vsml_es_data").expanduser()


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser().absolute() if data_dir else default_data_dir().absolute()


def prepare_command(name: str, data_dir: Path, download: bool = False) -> str:
    """The exact command that prepares ``name`` into ``data_dir``."""
    cmd = f"vsml-es data prepare {name}"
    if download:
        cmd += " --download"
    if data_dir != default_data_dir().absolute():
        cmd += f" --data-dir {shlex.quote(str(data_dir))}"
    return cmd
