"""Per-generation metrics as JSONL and CSV side by side (append-only, flushed every row)."""

from __future__ import annotations

import csv
import json
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
        new_csv = not self.csv_path.exists()
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

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
