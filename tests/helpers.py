"""Small helpers that several test modules share (imported as ``helpers``, like oracle_vsml)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np

from vsml_es.classifier import OnlineClassifier
from vsml_es.cli import main
from vsml_es.experiment import experiment_from_dict
from vsml_es.metatest import eval_keys
from vsml_es.tasks import load_task


def set_flags(overrides: Iterable[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]`` for the CLI."""
    return [arg for kv in overrides for arg in ("--set", kv)]


def refused_before_work(argv: list[str], out: Path, overrides: Iterable[str], message: str,
                        capsys) -> None:
    """The CLI command ``argv`` with these ``--set`` overrides exits 2 with ``message`` (spaces
    and line breaks as in any wrapping of it) and leaves ``out`` unwritten."""
    assert main([*argv, *set_flags(overrides)]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def replay_metatest(clf: OnlineClassifier, steps: int, episodes: int) -> np.ndarray:
    """Whether ``clf`` is right at each step of the run's own meta-test streams on digits:test
    (episodes x steps, float64): the learner file's classifier fed what the meta-test fed the
    learner, raw stored pixels included (the classifier preprocesses them itself)."""
    config = experiment_from_dict(clf.info["config"])
    task, data = load_task("digits:test", "test", steps, 10, True, None, 64,
                           preprocess=config.metatest.preprocess)
    correct = []
    for key in eval_keys(config.metatest.seed, episodes):  # the meta-test's own streams
        k_spec, k_learner = jax.random.split(key)
        spec = task.episode(k_spec)
        index = np.asarray(spec.indices)
        X = np.asarray(data.x)[index]
        y = np.asarray(spec.label_perm)[np.asarray(data.y)[index]]
        clf.reset(random_state=k_learner)
        correct.append(clf.predict_learn(X, y, classes=np.arange(10)) == y)
    return np.array(correct, dtype=np.float64)


def metatest_curve(run_dir: Path, method: str = "VSML") -> list[float]:
    """The run's meta-test accuracy curve of ``method`` on digits:test, step by step."""
    with open(run_dir / "metatest" / "curves_digits_test.csv", newline="") as f:
        return [float(row[f"{method} acc"]) for row in csv.DictReader(f)]


def poison_checkpoint(checkpoint: Path, value: float = float("nan")) -> None:
    """Make a checkpoint what a diverging run writes: every mean parameter ``value`` (NaN),
    the manifest rewritten to match (so only the arrays themselves tell)."""
    arrays = read_state(checkpoint)
    for name in arrays:
        if name.startswith("mean/") and arrays[name].dtype.kind == "f":
            arrays[name] = np.full_like(arrays[name], value)
    write_state(checkpoint, arrays)


def read_state(checkpoint: Path) -> dict[str, np.ndarray]:
    with np.load(checkpoint / "state.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_state(checkpoint: Path, arrays: dict[str, np.ndarray]) -> None:
    """A checkpoint's state.npz replaced by ``arrays``, its manifest rewritten to match."""
    import hashlib
    import io
    import json

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    (checkpoint / "state.npz").write_bytes(payload)
    manifest = json.loads((checkpoint / "MANIFEST.json").read_text())
    manifest["files"]["state.npz"] = {"sha256": hashlib.sha256(payload).hexdigest(),
                                      "size": len(payload)}
    (checkpoint / "MANIFEST.json").write_text(json.dumps(manifest))
