"""Episodes as pure, key-driven functions of in-memory dataset arrays.

An episode is described by a small spec drawn from a key (which examples, which label
permutation); each online step gathers and preprocesses one example inside the jitted scan.
So memory does not grow with the episode length, and any worker can rebuild the exact episode
from (seed, generation, episode id) without receiving data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.data import ArrayDataset, DatasetError, load_dataset


class TaskData(NamedTuple):
    """Device arrays of one dataset split; passed to jitted functions as arguments."""

    x: jax.Array  # [N, ...] stored values
    y: jax.Array  # [N] int32


class EpisodeSpec(NamedTuple):
    indices: jax.Array  # [T] example indices into TaskData
    label_perm: jax.Array  # [dataset_classes] label permutation


@dataclass(frozen=True)
class Task:
    """Static description of an episode distribution (hashable: a jit static argument)."""

    name: str
    num_examples: int
    num_features: int
    dataset_classes: int
    num_outputs: int  # network output size (>= dataset_classes)
    episode_length: int
    permute_labels: bool
    mean: float
    std: float

    def episode(self, key: jax.Array) -> EpisodeSpec:
        k_idx, k_perm = jax.random.split(key)
        if self.episode_length <= self.num_examples:
            # Without replacement: a held-out stream never repeats an example.
            indices = jax.random.permutation(k_idx, self.num_examples)[: self.episode_length]
        else:
            indices = jax.random.randint(k_idx, (self.episode_length,), 0, self.num_examples)
        if self.permute_labels:
            perm = jax.random.permutation(k_perm, self.dataset_classes)
        else:
            perm = jnp.arange(self.dataset_classes)
        return EpisodeSpec(indices.astype(jnp.int32), perm.astype(jnp.int32))

    def example(
        self, data: TaskData, spec: EpisodeSpec, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The t-th (features, label) of the episode, normalized and flattened."""
        i = spec.indices[t]
        x = (data.x[i].astype(jnp.float32).reshape(-1) - self.mean) / self.std
        y = spec.label_perm[data.y[i]]
        return x, y


def parse_dataset_ref(ref: str, default_split: str) -> tuple[str, str]:
    """'NAME' or 'NAME:SPLIT'."""
    name, _, split = ref.partition(":")
    return name, split or default_split


def make_task(
    dataset: ArrayDataset, episode_length: int, num_outputs: int, permute_labels: bool
) -> tuple[Task, TaskData]:
    if dataset.num_classes > num_outputs:
        raise DatasetError(
            f"Dataset '{dataset.name}' has {dataset.num_classes} classes but the network has "
            f"{num_outputs} outputs. Set task.num_classes to at least {dataset.num_classes}."
        )
    task = Task(
        name=f"{dataset.name}:{dataset.split}",
        num_examples=len(dataset),
        num_features=dataset.num_features,
        dataset_classes=dataset.num_classes,
        num_outputs=num_outputs,
        episode_length=episode_length,
        permute_labels=permute_labels,
        mean=float(dataset.mean),
        std=float(dataset.std) or 1.0,
    )
    data = TaskData(jnp.asarray(dataset.x), jnp.asarray(dataset.y, dtype=jnp.int32))
    return task, data


def load_task(
    ref: str,
    default_split: str,
    episode_length: int,
    num_outputs: int,
    permute_labels: bool = True,
    data_dir: str | None = None,
    num_features: int | None = None,
) -> tuple[Task, TaskData]:
    """Load a dataset by reference and wrap it as a task; checks the input size fits."""
    name, split = parse_dataset_ref(ref, default_split)
    dataset = load_dataset(name, split, data_dir)
    task, data = make_task(dataset, episode_length, num_outputs, permute_labels)
    if num_features is not None and task.num_features != num_features:
        raise DatasetError(
            f"Dataset '{ref}' has {task.num_features} input features but the meta-learned "
            f"network was built for {num_features}. Choose a dataset with {num_features} "
            "features or preprocess it to that size."
        )
    return task, data
