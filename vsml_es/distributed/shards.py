"""Splitting a population into shards: whole antithetic pairs, whole chunks where possible."""

from __future__ import annotations

import numpy as np


def plan_shards(episode_ids: np.ndarray, shards: int, chunk: int) -> list[np.ndarray]:
    """Member indices of at most ``shards`` shards; members sharing an episode id (antithetic
    pairs) stay together, and shard sizes are whole chunks where possible (no padding)."""
    ids = np.asarray(episode_ids)
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    size = int(counts[0])
    per_unit = chunk // size if np.all(counts == size) and chunk % size == 0 else 1
    units = [groups[i:i + per_unit] for i in range(0, len(groups), per_unit)]
    parts = np.array_split(np.arange(len(units)), max(1, min(shards, len(units))))
    return [np.sort(np.concatenate([m for u in part for m in units[u]])) for part in parts]


