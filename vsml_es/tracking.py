"""Experiment tracking beside ``metrics.jsonl``: TensorBoard event files and Weights & Biases.

Both are optional (``logging.tensorboard``, ``logging.wandb``) and both resume into the same
run without duplicate steps: a resumed run recomputes the generations after its checkpoint bit
for bit, so TensorBoard discards the events from that generation on (``purge_step``) and W&B
skips the steps it already has. The step is the generation index, as in ``metrics.jsonl``.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
from pathlib import Path
from typing import Any

from vsml_es.config import LoggingConfig
from vsml_es.errors import ConfigError

WANDB_KEYS = ("project", "mode", "entity", "group", "tags", "name")
WANDB_MODES = ("offline", "online", "disabled")
SCALARS = {  # metrics.jsonl column -> tracked name
    "fitness_mean": "fitness/mean", "fitness_min": "fitness/min", "fitness_max": "fitness/max",
    "accuracy_mean": "accuracy/mean", "mean_norm": "es/mean_norm", "nonfinite": "es/nonfinite",
    "seconds": "time/seconds_per_generation",
}


def validate_tracking(logging: LoggingConfig) -> None:
    """Options and the libraries they need, before any work."""
    if logging.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError("logging.tensorboard needs the tensorboardX package: pip install "
                          "tensorboardX (no TensorFlow needed).")
    if not logging.wandb:
        return
    unknown = sorted(set(logging.wandb) - set(WANDB_KEYS))
    if unknown:
        raise ConfigError(f"logging.wandb has unknown keys {unknown}; valid: "
                          f"{', '.join(WANDB_KEYS)}.")
    if not isinstance(logging.wandb.get("project"), str) or not logging.wandb["project"]:
        raise ConfigError("logging.wandb needs a project name, e.g. "
                          "logging.wandb={project: vsml, mode: offline}.")
    mode = logging.wandb.get("mode", "offline")
    if mode not in WANDB_MODES:
        raise ConfigError(f"logging.wandb.mode is {mode!r}; valid: {', '.join(WANDB_MODES)} "
                          "(offline writes to the run directory; 'wandb sync' uploads later).")
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("logging.wandb needs the wandb package: pip install 'vsml-es[wandb]'.")


def _scalars(row: dict[str, Any], status: dict[str, Any]) -> dict[str, float]:
    out = {name: float(row[key]) for key, name in SCALARS.items()
           if isinstance(row.get(key), int | float)}
    workers = str(status.get("workers", ""))
    if "/" in workers:
        out["ray/workers_alive"] = float(workers.split("/")[0])
    for key in ("resent", "in_flight"):
        if isinstance(status.get(key), int):
            out[f"ray/{key}"] = float(status[key])
    return out


def _metatest_points(summaries: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Accuracy at each reported inner step, one series per (dataset, method)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for s in summaries:
        tag = f"metatest/{s['dataset']}/{s['method']}/accuracy"
        series[tag] = [(int(k[4:]), float(v)) for k, v in s.items()
                       if k.startswith("acc@") and not k.endswith("_ci95")]
    return series


class TensorBoard:
    def __init__(self, run_dir: Path, start_generation: int | None):
        self.root = run_dir / "tensorboard"
        self.start_generation = start_generation
        self.writer: Any = None  # opened on the first row: a meta-test-only tracker adds none

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is None:
            from tensorboardX import SummaryWriter

            # purge_step: events at or after the resumed generation came from the abandoned
            # part of the run. The suffix: tensorboardX names files by the second, and a resume
            # within the same second would truncate the earlier session's file; readers order
            # files by name, so the suffix sorts sessions of one second by generation.
            self.writer = SummaryWriter(logdir=str(self.root), purge_step=self.start_generation,
                                        filename_suffix=f".gen{self.start_generation:010d}")
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_metatest(self, summaries: list[dict[str, Any]]) -> None:
        """Learning curves against the inner step, in a run of their own (metatest/)."""
        from tensorboardX import SummaryWriter

        with SummaryWriter(logdir=str(self.root / "metatest")) as writer:
            for tag, points in _metatest_points(summaries).items():
                for step, value in points:
                    writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WandB:
    """A W&B run whose id lives in the run directory, so every resume continues it."""

    def __init__(self, settings: dict[str, Any], run_dir: Path, config: dict[str, Any]):
        import wandb

        id_file, self.step_file = run_dir / "wandb_id", run_dir / "wandb_step.json"
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)  # W&B ids: short, lowercase, unique per project
            id_file.write_text(run_id + "\n")
        self.last = (json.loads(self.step_file.read_text())["step"]
                     if self.step_file.is_file() else -1)
        self.run = wandb.init(
            project=settings["project"], entity=settings.get("entity"),
            group=settings.get("group"), tags=settings.get("tags"),
            name=settings.get("name") or config.get("name"), id=run_id, resume="allow",
            dir=str(run_dir), mode=settings.get("mode", "offline"), config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if step <= self.last:  # already logged before the resume: the same numbers
            return
        self.run.log(scalars, step=step)
        self.last = step
        self.step_file.write_text(json.dumps({"step": step}))

    def log_metatest(self, summaries: list[dict[str, Any]]) -> None:
        """Into the run's summary (W&B steps are generations; inner steps are another axis)."""
        self.run.summary.update({f"{tag}@{step}": value
                                 for tag, points in _metatest_points(summaries).items()
                                 for step, value in points})

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Every enabled tracker, fed the rows that go to ``metrics.jsonl``."""

    def __init__(self, trackers: list[Any]):
        self.trackers = trackers

    def log(self, row: dict[str, Any], status: dict[str, Any]) -> None:
        scalars = _scalars(row, status)
        for tracker in self.trackers:
            tracker.log(int(row["generation"]), scalars)

    def log_metatest(self, summaries: list[dict[str, Any]]) -> None:
        """Meta-test accuracy at each reported inner step, per dataset and method."""
        for tracker in self.trackers:
            tracker.log_metatest(summaries)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def open_trackers(logging: LoggingConfig, run_dir: Path, start_generation: int,
                  config: dict[str, Any] | None = None, append: bool = False) -> Trackers:
    """The trackers ``logging`` asks for; ``append`` keeps what they hold (no purge)."""
    trackers: list[Any] = []
    if logging.tensorboard:
        trackers.append(TensorBoard(Path(run_dir), None if append else start_generation))
    if logging.wandb:
        trackers.append(WandB(dict(logging.wandb), Path(run_dir), config or {}))
    return Trackers(trackers)
