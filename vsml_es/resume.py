"""Deciding how to resume a run: which checkpoint, which config, what to warn about.

A resumed run must compute exactly what the uninterrupted run would have, so its config may
differ from the run's only in keys that cannot change the meta-training trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vsml_es.config import Config, config_to_dict, read_yaml_file
from vsml_es.errors import CheckpointError, ConfigError, Report, ResumeError, report
from vsml_es.experiment import experiment_from_dict, with_overrides
from vsml_es.metrics import truncate_metrics
from vsml_es.paths import RUN_MARKER, holds_run
from vsml_es.storage.checkpoint import (
    DIVERGED,
    Checkpoint,
    checkpoint_dirs,
    latest_checkpoint,
    read_checkpoint,
    set_aside_after,
    versions,
)

# Keys (exact, or a section ending in ".") that may change on resume: they decide how long to
# train, what is logged or checkpointed, where it runs (workers, the data's location on this
# machine) and how the result is meta-tested, never which numbers the generations compute.
SAFE_TO_CHANGE = (
    "name",
    "training.generations",
    "logging.",
    "checkpoint.",
    "distributed.",
    "metatest.",
    "compare.",
    "task.data_dir",
)
# A different version of these may compute different floats: resume warns.
VERSION_SENSITIVE = ("jax", "jaxlib", "evosax", "numpy")

def is_safe(path: str) -> bool:
    return any(path == key or (key.endswith(".") and path.startswith(key))
               for key in SAFE_TO_CHANGE)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as {dot.path: leaf}."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def config_differences(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every leaf that differs, in config order."""
    a, b = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def _format(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix(
        "\n...").removesuffix(" ...")


@dataclass
class ResumePlan:
    config: Config
    checkpoint: Checkpoint | None  # None: no valid checkpoint, start again at generation 0


def run_config(run_dir: Path, checkpoint: Checkpoint | None) -> Config:
    """The run's own resolved config: from the checkpoint, else from RUN_DIR/config.yaml."""
    if checkpoint is not None:
        source, data = f"checkpoint {checkpoint.path}", checkpoint.meta.get("config")
    else:
        path = Path(run_dir) / "config.yaml"
        if not path.is_file():
            raise ResumeError(
                f"'{run_dir}' holds no vsml-es run to resume (no valid checkpoint and no "
                "config.yaml). Start a run with: vsml-es train EXPERIMENT.yaml --run-dir "
                f"{run_dir}"
            )
        source = str(path)
        try:
            data = read_yaml_file(path, "The run's config")
        except ConfigError as err:
            raise ResumeError(f"{err} Restore it, or start a new run.") from None
    if not isinstance(data, dict):
        raise ResumeError(f"{source} holds no config mapping.")
    try:
        return experiment_from_dict(data)
    except ConfigError as err:
        raise ResumeError(
            f"The config stored in {source} is not valid for this vsml-es version: {err}"
        ) from None


def check_config_file_unedited(run_dir: Path, saved: Config, report: Report = report) -> None:
    """RUN_DIR/config.yaml is what vsml-es wrote there (a resume rewrites it). A file edited by
    hand (comments, layout, or a key that changes the result) is refused before anything is
    written, so the user's changes are never silently replaced; a changed key that may change
    on resume (training.generations, ...) is only reported, with how to change it."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return
    how = ("Keys that may change on resume go on the command line (vsml-es resume RUN_DIR --set "
           "KEY=VALUE); to keep your file, move it out of the run directory (it is an "
           "experiment file: vsml-es train FILE --run-dir NEW_DIR), then resume.")
    try:
        raw = read_yaml_file(path, "The run's config")
        canonical = yaml.safe_dump(raw, sort_keys=False) == path.read_text()
    except (ConfigError, OSError, UnicodeDecodeError) as err:
        raise ResumeError(f"{path} cannot be read ({err}); vsml-es wrote it, so it was damaged "
                          f"or edited. {how}") from None
    if not canonical or not isinstance(raw, dict):
        raise ResumeError(f"{path} was edited by hand since vsml-es wrote it (its text is not "
                          f"what vsml-es writes); resuming rewrites it and would lose that. {how}")
    try:
        edited = experiment_from_dict(raw)
    except ConfigError as err:
        raise ResumeError(f"{path} was edited and is no longer a valid config: {err} {how}"
                          ) from None
    changes = config_differences(saved, edited)
    refused = [c for c in changes if not is_safe(c[0])]
    if refused:
        listed = "; ".join(f"{k}: {_format(a)} (run) -> {_format(b)} (file)"
                           for k, a, b in refused)
        raise ResumeError(f"{path} was edited: it differs from the run's config in keys that "
                          f"would change the result ({listed}). A run continues with its own "
                          f"config. {how}")
    for key, old, new in changes:
        report(f"note: {path} says {key}: {_format(new)}, the run's checkpoint {_format(old)}; "
               "the resume uses the checkpoint's value and --set, and rewrites the file.")


def plan_resume(
    run_dir: Path,
    requested: Config | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    report: Report = report,
    restart: bool = False,
) -> ResumePlan:
    """Newest valid checkpoint + the config to continue with, or a :class:`ResumeError`.

    ``requested`` is a config built from an experiment file (``train EXP --resume``); without
    one the run's own config is used, with ``overrides`` applied. A run whose checkpoints are
    all unusable starts over only with ``restart`` (it would lose their progress); a run killed
    before its first checkpoint starts over without asking (nothing is lost).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise ResumeError(f"Run directory '{run_dir}' {what}.")
    if not holds_run(run_dir):
        raise ResumeError(
            f"'{run_dir}' holds no vsml-es run to resume (no run marker {RUN_MARKER}, "
            "checkpoint or params.npz that vsml-es wrote), so nothing there is resumed or "
            "changed. A config.yaml of your own is an experiment file: start a run from it with "
            f"'vsml-es train {run_dir / 'config.yaml'} --run-dir NEW_DIR'."
        )
    checkpoint = latest_checkpoint(run_dir, report)
    saved = run_config(run_dir, checkpoint)
    check_config_file_unedited(run_dir, saved, report)
    config = requested if requested is not None else with_overrides(saved, list(overrides))
    changes = config_differences(saved, config)
    refused = [c for c in changes if not is_safe(c[0])]
    if refused:
        listed = "; ".join(f"{k}: {_format(a)} (run) -> {_format(b)} (now)" for k, a, b in refused)
        raise ResumeError(
            f"Cannot resume '{run_dir}' with a changed config; these keys differ from the "
            f"run's: {listed}. Only these may change on resume: "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in SAFE_TO_CHANGE)}. "
            "Undo the changes, or start a new run in another directory."
        )
    for key, old, new in changes:
        report(f"resuming with {key} changed: {_format(old)} -> {_format(new)}")
    if checkpoint is None:
        if checkpoint_dirs(run_dir) and not restart:
            if diverged(run_dir):
                raise ResumeError(
                    f"No checkpoint in '{run_dir / 'checkpoints'}' is usable and the run "
                    "diverged (NaN or infinite meta-parameters, see the warnings above). Lower "
                    "training.learning_rate (or training.sigma) and start a new run (vsml-es "
                    "train EXPERIMENT.yaml --set training.learning_rate=... --run-dir NEW_DIR),"
                    " or add --restart to start this run over at generation 0 with its config."
                )
            raise ResumeError(
                f"Every checkpoint in '{run_dir / 'checkpoints'}' is unusable (see the warnings "
                "above), so resuming would start over at generation 0 and cut the metrics logs "
                "back. Add --restart if that is what you want (the unusable checkpoints are "
                "kept aside as .corrupt-*), or restore a checkpoint from a backup first."
            )
        report(f"no valid checkpoint in '{run_dir}': starting again from generation 0.")
        return ResumePlan(config, None)
    if checkpoint.generation > config.training.generations:
        raise ResumeError(
            f"The run is already at generation {checkpoint.generation}, beyond "
            f"training.generations={config.training.generations}. To train longer, pass "
            f"--set training.generations=N with N >= {checkpoint.generation}."
        )
    for warning in version_warnings(checkpoint.meta.get("versions", {})):
        report(warning)
    return ResumePlan(config, checkpoint)


def diverged(run_dir: Path) -> bool:
    """Whether some checkpoint of the run is unusable because its parameters are NaN/inf."""
    for _, path in checkpoint_dirs(run_dir):
        try:
            read_checkpoint(path)
        except CheckpointError as err:
            if DIVERGED in str(err):
                return True
    return False


def version_warnings(saved: dict[str, str]) -> list[str]:
    now = versions()
    return [
        f"warning: the checkpoint was written with {name} {saved[name]}, this is {now[name]}; "
        "the resumed run may differ in the last bits from an uninterrupted one."
        for name in VERSION_SENSITIVE
        if name in saved and saved[name] != now.get(name)
    ]


def rewind(run_dir: Path, checkpoint: Checkpoint | None, report: Report = report) -> None:
    """Make the run directory look as it did when ``checkpoint`` was written (nothing: as new).

    Metrics logs are cut back to the checkpoint's position; newer checkpoints, which a resume
    only skips when they are unusable, are set aside as ``.corrupt-*``.
    """
    position = checkpoint.meta.get("metrics_position", {}) if checkpoint else {}
    for warning in truncate_metrics(run_dir, position):
        report(f"warning: {warning}")
    for path in set_aside_after(run_dir, checkpoint.generation if checkpoint else -1):
        report(f"set the unusable checkpoint aside as {path}")
