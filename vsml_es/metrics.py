"""Per-generation metrics as JSONL and CSV side by side (append-only, flushed every row)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

COLUMNS = (
    "generation",
    "fitness_mean",
    "fitness_min",
    "fitness_max",
    "accuracy_mean",
    "nonfinite",
    "mean_norm",
    "seconds",
    "wall_time",
)


class MetricsLog:
    def __init__(self, run_dir: Path):
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        self.csv_path = Path(run_dir) / "metrics.csv"
        new_csv = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._jsonl = open(self.jsonl_path, "a")
        self._csv_file = open(self.csv_path, "a", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=COLUMNS, extrasaction="ignore")
        if new_csv:
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(row, sort_keys=True) + "\n")
        self._jsonl.flush()
        self._csv.writerow(row)
        self._csv_file.flush()

    def position(self) -> dict[str, int]:
        """Byte length of each log file, flushed and fsynced. A checkpoint records it, so a
        resume can cut the logs back to exactly the rows of the generations it restores."""
        position = {}
        for path, f in ((self.jsonl_path, self._jsonl), (self.csv_path, self._csv_file)):
            f.flush()
            os.fsync(f.fileno())
            position[path.name] = f.tell()
        return position

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()


def truncate_metrics(run_dir: Path, position: dict[str, int]) -> list[str]:
    """Cut the logs back to a recorded :meth:`MetricsLog.position` (an empty dict: to nothing).

    Rows past the position belong to generations that the resumed run computes again. Returns
    a warning for each log that is shorter than recorded (rows lost outside our control).
    """
    warnings = []
    for name in ("metrics.jsonl", "metrics.csv"):
        path = Path(run_dir) / name
        size = position.get(name, 0)
        actual = path.stat().st_size if path.exists() else 0
        if actual < size:
            warnings.append(
                f"{path} has {actual} bytes but the checkpoint recorded {size}; rows written "
                "before the checkpoint are missing from it (the resumed run appends after them)."
            )
        elif path.exists():
            with open(path, "r+b") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
    return warnings
