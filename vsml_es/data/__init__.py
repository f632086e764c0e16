"""Datasets as in-memory numpy arrays.

Every loader returns an :class:`ArrayDataset` with raw stored values (uint8 images or float
features) plus the statistics needed to normalize them on device, so that episode sampling
(``vsml_es.tasks``) stays a pure, key-driven JAX function that workers can rebuild from seeds.
Image datasets live in a TFDS data dir as ArrayRecord (:mod:`vsml_es.data.tfds_store`) and
are made available offline with :func:`prepare_dataset` (``vsml-es data prepare``).
"""

from __future__ import annotations

from vsml_es.data.catalog import (
    dataset_names,
    dataset_status,
    get_spec,
    load_dataset,
    prepare_dataset,
)
from vsml_es.data.registry import (
    DATA_DIR_ENV,
    ArrayDataset,
    DatasetSpec,
    DatasetStatus,
    default_data_dir,
    resolve_data_dir,
)
from vsml_es.errors import DatasetError

__all__ = [
    "DATA_DIR_ENV",
    "ArrayDataset",
    "DatasetError",
    "DatasetSpec",
    "DatasetStatus",
    "dataset_names",
    "dataset_status",
    "default_data_dir",
    "get_spec",
    "load_dataset",
    "prepare_dataset",
    "resolve_data_dir",
]
