"""Datasets as in-memory numpy arrays.

Every loader returns an :class:`ArrayDataset` with raw stored values (uint8 images or float
features) plus the statistics needed to normalize them on device, so that episode sampling
(``vsml_es.tasks``) stays a pure, key-driven JAX function that workers can rebuild from seeds.
"""

from __future__ import annotations

from vsml_es.data.registry import ArrayDataset, DatasetError, dataset_names, load_dataset

__all__ = ["ArrayDataset", "DatasetError", "dataset_names", "load_dataset"]
