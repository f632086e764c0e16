"""``export``: a run's meta-learned learner as one portable ``.vsml`` file.

Picks the parameters (newest valid checkpoint, the best one, a generation, or params.npz),
attaches the run's meta-test scores when they were computed from exactly those parameters, and
writes the file (format: ``vsml_es.storage.learner_file``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsml_es.config import NAME
from vsml_es.errors import Report, UserError, report
from vsml_es.paths import check_output_file
from vsml_es.storage.checkpoint import (
    Checkpoint,
    best_checkpoint,
    checkpoint_dirs,
    checkpoint_name,
    latest_checkpoint,
    read_checkpoint,
)
from vsml_es.storage.learner_file import SUFFIX, learner_file_meta, params_sha256
from vsml_es.storage.params import load_params, save_params


@dataclass
class Source:
    """Where exported parameters come from inside a run directory."""

    label: str  # "checkpoints/gen-000040" or "params.npz"
    generation: int
    params: dict[str, np.ndarray]
    info: dict[str, Any]  # config, num_features, num_outputs, input_stats


def select_source(run_dir: Path, which: str = "latest", report: Report = report) -> Source:
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


def export_run(run_dir: Path, out: Path | None = None, which: str = "latest",
               report: Report = report, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write the ``.vsml`` file of a run (default RUN_DIR/NAME.vsml, replaced on a re-export);
    an explicit ``out`` that exists is replaced only with ``force``. Returns path, metadata."""
    if out is not None:
        if Path(out).suffix != SUFFIX:
            raise UserError(f"The learner file name must end in {SUFFIX}, got '{out}'.")
        check_output_file(Path(out), "--output", replace_ok=force)
    source = select_source(run_dir, which, report)
    bad = sorted(name for name, value in source.params.items()
                 if np.asarray(value).dtype.kind not in "fiub"
                 or not np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
    if bad:  # a learner with them predicts nothing: never written
        raise UserError(
            f"The parameters of {source.label} in '{run_dir}' are not finite (NaN or infinity "
            f"in {', '.join(bad[:3])}): the run diverged. Export an earlier checkpoint "
            "(--checkpoint best or --checkpoint GENERATION), or train again with a lower "
            "training.learning_rate.")
    scores, note = metatest_scores(run_dir, source)
    meta = learner_file_meta(source.info, source.params, source.generation, source.label,
                             scores, note)
    if out is None:
        name = meta["training"]["run_name"]
        safe = name if isinstance(name, str) and NAME.match(name) else "learner"
        out = Path(run_dir) / f"{safe}{SUFFIX}"
        check_output_file(out, "the learner file", replace_ok=True)
    save_params(out, source.params, meta)
    return out, meta
