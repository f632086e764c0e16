"""The ``.vsml`` learner file: a meta-learned learning algorithm that anyone can load.

One npz file (read with ``allow_pickle=False``): the mean meta-parameters as named arrays plus
one JSON metadata record (model config, input/output sizes, input preprocessing, training
provenance, meta-test scores, versions). The format is documented in docs/vsml-file-format.md;
``FORMAT_VERSION`` changes whenever a reader would have to behave differently.
"""

from __future__ import annotations

import csv
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsml_es.checkpoint import (
    Checkpoint,
    best_checkpoint,
    checkpoint_dirs,
    checkpoint_name,
    latest_checkpoint,
    read_checkpoint,
    versions,
)
from vsml_es.cli import UserError
from vsml_es.params_io import load_params, save_params

FORMAT = "vsml-learner"
FORMAT_VERSION = 1
SUFFIX = ".vsml"
PARAMS_FORMAT = "vsml-es-params"  # a run's params.npz, also loadable as a learner

Report = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def params_sha256(params: dict[str, Any]) -> str:
    """Identity of a parameter set: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(params):
        value = np.ascontiguousarray(params[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@dataclass
class Source:
    """Where exported parameters come from inside a run directory."""

    label: str  # "checkpoints/gen-000040" or "params.npz"
    generation: int
    params: dict[str, np.ndarray]
    info: dict[str, Any]  # config, num_features, num_outputs, input_stats


def select_source(run_dir: Path, which: str = "latest", report: Report = _stderr) -> Source:
    """``latest`` (newest valid checkpoint, else params.npz), ``best``, or a generation."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"Run directory '{run_dir}' does not exist.")
    if which == "best":
        ckpt = best_checkpoint(run_dir, report)
        if ckpt is None:
            raise UserError(f"'{run_dir}' has no valid checkpoint to take the best one from.")
        return _from_checkpoint(run_dir, ckpt)
    if which != "latest":
        try:
            generation = int(which)
        except ValueError:
            raise UserError(
                f"--checkpoint is '{which}'; use latest, best or a generation number."
            ) from None
        path = run_dir / "checkpoints" / checkpoint_name(generation)
        if not path.is_dir():
            have = ", ".join(str(g) for g, _ in checkpoint_dirs(run_dir)) or "none"
            raise UserError(f"'{run_dir}' has no checkpoint of generation {generation} "
                            f"(available: {have}).")
        try:
            return _from_checkpoint(run_dir, read_checkpoint(path))
        except ValueError as err:
            raise UserError(f"Checkpoint {path} is unusable: {err}.") from None
    ckpt = latest_checkpoint(run_dir, report)
    if ckpt is not None:
        return _from_checkpoint(run_dir, ckpt)
    if (run_dir / "params.npz").is_file():
        params, meta = load_params(run_dir / "params.npz")
        return Source("params.npz", int(meta.get("generation", 0)), params, meta)
    raise UserError(
        f"'{run_dir}' has no valid checkpoint and no params.npz: nothing to export. Train "
        "first (vsml-es train EXPERIMENT.yaml --run-dir DIR) or resume it (vsml-es resume DIR)."
    )


def _from_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Source:
    label = str(ckpt.path.relative_to(run_dir))
    return Source(label, ckpt.generation, ckpt.mean_params(), ckpt.meta)


def metatest_scores(run_dir: Path, source: Source) -> tuple[list[dict[str, Any]], str]:
    """The run's meta-test rows if they were computed from exactly these parameters."""
    summary = Path(run_dir) / "metatest" / "summary.csv"
    final = Path(run_dir) / "params.npz"
    if not summary.is_file() or not final.is_file():
        return [], "not meta-tested; run 'vsml-es evaluate FILE.vsml' for scores"
    params, meta = load_params(final)
    if params_sha256(params) != params_sha256(source.params):
        return [], (f"the run's meta-test used generation {meta.get('generation')}, not these "
                    "parameters; run 'vsml-es evaluate FILE.vsml' for their scores")
    with open(summary, newline="") as f:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return rows, "meta-test of these parameters by 'vsml-es train' (metatest/summary.csv)"


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def learner_meta(source: Source, scores: list[dict[str, Any]], note: str) -> dict[str, Any]:
    config = source.info["config"]
    task, training, model = config["task"], config["training"], config["model"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "learner": model.get("learner", "vsml"),
        "model": model,
        "num_inputs": int(source.info["num_features"]),
        "num_outputs": int(source.info["num_outputs"]),
        "input": {
            "preprocess": task.get("preprocess", {}),
            "stats": source.info.get("input_stats", []),
            "example_shape": source.info.get("example_shape"),
        },
        "training": {
            "run_name": config.get("name"),
            "datasets": list(task.get("mixture") or [task["dataset"]]),
            "split": task.get("split"),
            "episode_length": task.get("episode_length"),
            "permute_labels": task.get("permute_labels"),
            "fitness": task.get("fitness"),
            "strategy": training.get("strategy"),
            "population_size": training.get("population_size"),
            "seed": training.get("seed"),
            "generation": source.generation,
            "source": source.label,
        },
        "metatest": {"note": note, "summary": scores},
        "params_sha256": params_sha256(source.params),
        "versions": versions(),
        "config": config,
    }


def export_run(run_dir: Path, out: Path | None = None, which: str = "latest",
               report: Report = _stderr) -> tuple[Path, dict[str, Any]]:
    """Write the ``.vsml`` file of a run (default RUN_DIR/NAME.vsml); returns path, metadata."""
    if out is not None and Path(out).suffix != SUFFIX:
        raise UserError(f"The learner file name must end in {SUFFIX}, got '{out}'.")
    source = select_source(run_dir, which, report)
    scores, note = metatest_scores(run_dir, source)
    meta = learner_meta(source, scores, note)
    if out is None:
        out = Path(run_dir) / f"{meta['training']['run_name']}{SUFFIX}"
    save_params(out, source.params, meta)
    return out, meta
