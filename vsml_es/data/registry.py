"""Name → dataset registry. One call loads a split as numpy arrays; one call prepares it.

Each dataset registers a loader plus static metadata (classes, example shape, splits), so
``vsml-es data list`` and config validation can describe a dataset without loading it.
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vsml_es.errors import DatasetError, did_you_mean

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


def dataset_names() -> list[str]:
    _ensure_registered()
    return sorted(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    """The registered spec; an unknown name lists every valid one."""
    _ensure_registered()
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
    report = spec.prepare(resolve_data_dir(data_dir), manual, download, progress)
    _load_cached.cache_clear()
    return report


def _ensure_registered() -> None:
    # Imported lazily so that importing the registry stays cheap (no TFDS import here).
    from vsml_es.data import builtin, tfds_store  # noqa: F401
