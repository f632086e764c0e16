"""Shared fixtures: tiny configs so that every test compiles and runs in seconds."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Tests never touch the network and never pick up a user's running Ray cluster.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tests never read a user's prepared datasets: each session gets an empty data dir, and tests
# that need a TFDS dataset prepare it themselves (offline, from Debian's files).
os.environ["VSML_ES_DATA_DIR"] = tempfile.mkdtemp(prefix="vsml-es-test-data-")
# One XLA compilation cache for the session (its own, empty at the start): the many tiny runs
# build their jitted functions anew, but the same computation compiles once, in this process,
# its subprocesses and Ray workers alike (the same executables either way).
os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE = tempfile.mkdtemp(prefix="vsml-es-test-xla-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

TINY = [
    "training.population_size=8",
    "training.generations=3",
    "training.eval_chunk=4",
    "task.episode_length=8",
    "metatest.episodes=4",
    "metatest.steps=12",
    "metatest.sgd_tuning_episodes=2",
    "logging.progress=false",
    "metatest.datasets=[digits:test]",
    "distributed.workers=0",  # in-process; tests/test_distributed.py covers the Ray paths
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def dataset_loads(monkeypatch) -> list[tuple[str, str]]:
    """Every (name, split) that tasks load from now on, in order."""
    from vsml_es import tasks

    seen: list[tuple[str, str]] = []
    real = tasks.load_dataset

    def spy(name, split="train", data_dir=None):
        seen.append((name, split))
        return real(name, split, data_dir)

    monkeypatch.setattr(tasks, "load_dataset", spy)
    return seen
