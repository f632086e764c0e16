"""Reading run directories back: metrics, status, and which runs differ only in their seed.

What ``vsml-es runs`` lists and ``vsml-es plot`` draws. A run's state is kept in
``RUN/status.json`` by the trainer (running with its pid and host, finished, interrupted,
crashed); a run that says "running" while its process is gone was killed.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsml_es.config import read_yaml_file
from vsml_es.errors import ConfigError
from vsml_es.reporting import TRAINING_METRICS, plot_meta_training
from vsml_es.resume import flatten, is_safe
from vsml_es.storage.atomic import atomic_write_bytes
from vsml_es.storage.checkpoint import checkpoint_dirs, latest_checkpoint

STATUS_FILE = "status.json"


def write_status(run_dir: Path, state: str, generation: int) -> None:
    """Record the run's state (running | finished | interrupted | crashed) for ``runs``."""
    record = {"state": state, "generation": generation, "pid": os.getpid(),
              "host": socket.gethostname(), "updated": time.time()}
    atomic_write_bytes(Path(run_dir) / STATUS_FILE, json.dumps(record).encode())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``; a torn last line (a kill mid-write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("generation"), int):
                rows.append(row)
    return rows


def metrics_problem(run_dir: Path) -> str | None:
    """What is wrong with ``metrics.jsonl`` when it is not the log vsml-es writes (binary,
    not JSON lines, rows without a generation), or None. A torn last line is not a problem."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"it is not UTF-8 text (byte {err.start}): binary data"
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1] if not text.endswith("\n") else lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON"
        if not isinstance(row, dict) or not isinstance(row.get("generation"), int):
            return f"line {number} is not a row of metrics (no generation number)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def run_status(run_dir: Path, config: dict[str, Any] | None) -> str:
    if config is None:
        return "corrupt"
    path = Path(run_dir) / STATUS_FILE
    try:
        record = json.loads(path.read_text())
        state = str(record["state"])
    except (OSError, ValueError, KeyError, TypeError):
        state = "unknown"
    if state == "running":
        if record.get("host") == socket.gethostname() and not _alive(int(record["pid"])):
            return "interrupted"  # killed without a chance to say so
        return "running" if record.get("host") == socket.gethostname() else (
            f"running on {record.get('host')}")
    if state == "unknown" and (Path(run_dir) / "params.npz").is_file():
        return "finished"
    if checkpoint_dirs(run_dir) and latest_checkpoint(run_dir, report=lambda m: None) is None:
        return "corrupt"
    return state if state != "unknown" else "interrupted"


@dataclass
class RunSummary:
    path: Path
    name: str
    generation: int
    total: int
    best_fitness: float | None
    last_fitness: float | None
    metatest: str
    status: str


def load_run_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        config = read_yaml_file(Path(run_dir) / "config.yaml", "config")
    except ConfigError:
        return None
    return config if isinstance(config, dict) else None


def summarize(run_dir: Path) -> RunSummary:
    config = load_run_config(run_dir)
    rows = read_metrics(run_dir)
    fitness = [r["fitness_mean"] for r in rows if isinstance(r.get("fitness_mean"), int | float)]
    total = (config or {}).get("training", {}).get("generations", 0)
    return RunSummary(
        path=Path(run_dir),
        name=str((config or {}).get("name", "?")),
        generation=rows[-1]["generation"] + 1 if rows else 0,
        total=total if isinstance(total, int) else 0,
        best_fitness=min(fitness) if fitness else None,
        last_fitness=fitness[-1] if fitness else None,
        metatest=_metatest_line(Path(run_dir) / "metatest" / "summary.csv"),
        status=run_status(run_dir, config),
    )


def _metatest_line(summary: Path) -> str:
    """The meta-learned learner's accuracy in the last quarter, per meta-test dataset."""
    if not summary.is_file():
        return "-"
    try:
        with open(summary, newline="") as f:
            rows = list(csv.DictReader(f))
        first = rows[0]["method"] if rows else None
        return ", ".join(f"{r['dataset']} {100 * float(r['acc_last_quarter']):.1f}%"
                         for r in rows if r["method"] == first) or "-"
    except (OSError, KeyError, ValueError):
        return "unreadable"


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run directories at or below ``root`` (those vsml-es made: see ``paths.holds_run``)."""
    from vsml_es.paths import holds_run

    root = Path(root)
    found = []
    if holds_run(root):
        found.append(root)
    elif depth > 0 and root.is_dir():
        for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] != "."):
            found.extend(find_runs(child, depth - 1))
    return found


def seed_groups(runs: list[Path]) -> dict[str, list[Path]]:
    """Runs that differ only in ``training.seed`` (and keys that cannot change the result)
    grouped, each group named by the settings that set it apart from the others."""
    keyed: dict[tuple, list[Path]] = {}
    settings: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        config = load_run_config(run) or {"name": run.name}
        flat = {k: json.dumps(v, sort_keys=True) for k, v in flatten(config).items()
                if not is_safe(k) and k != "training.seed"}
        key = tuple(sorted(flat.items()))
        keyed.setdefault(key, []).append(run)
        settings[key] = flat
    differing = sorted({k for s in settings.values() for k, v in s.items()
                        if any(other.get(k) != v for other in settings.values())})
    named = {}
    for key, members in keyed.items():
        label = ", ".join(f"{k}={json.loads(settings[key][k])}" for k in differing
                          if k in settings[key]) or (load_run_config(members[0]) or {}).get(
                              "name", members[0].name)
        named[str(label)] = members
    return named



def plot_runs(runs: list[Path], out: Path,
              metrics: tuple[str, ...] = tuple(TRAINING_METRICS)) -> dict[str, list[Path]]:
    """``out``: the meta-training curves of ``runs``, seed groups as mean ± 95% interval."""
    groups = seed_groups(runs)
    plot_meta_training(out, {label: [read_metrics(r) for r in members]
                             for label, members in groups.items()}, metrics)
    return groups
