"""One screens.md row: VSML's meta-test accuracy pooled over meta-training seeds.

    python docs/results/screens/pool_evals.py [--method=PREFIX] LABEL EVAL_DIR [EVAL_DIR ...]

Each EVAL_DIR is the --out of one seed's `vsml-es evaluate` (see screens.md for the command);
cells are the mean over seeds ± the 95 % t-interval across seeds (vsml_es.reporting.t_interval).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from vsml_es.reporting import read_summary_rows, t_interval

COLUMNS = [("fashion_mnist:test", s) for s in (25, 50, 100, 200, 2000)] + [
    ("fashion_mnist:test@28x28", s) for s in (25, 100, 2000)] + [
    ("digits:test", s) for s in (100, 2000)]


def seed_row(eval_dir: Path, method: str = "VSML") -> list[float]:
    rows = read_summary_rows(eval_dir / "summary.csv", method)
    return [100 * float(rows[ds][f"acc@{step}"]) for ds, step in COLUMNS]


def main(label: str, dirs: list[str], method: str = "VSML") -> str:
    values = np.array([seed_row(Path(d), method) for d in dirs])
    mean, half = values.mean(axis=0), t_interval(values)
    cells = [f"{m:.1f} ± {h:.1f}" if len(dirs) > 1 else f"{m:.1f}"
             for m, h in zip(mean, half, strict=True)]
    per_seed = "; ".join(f"{row[0]:.1f} / {row[4]:.1f}" for row in values)
    return f"| {label} | {len(dirs)} | " + " | ".join(cells) + f" | {per_seed} |"


if __name__ == "__main__":
    args = sys.argv[1:]
    method = "VSML"
    if args and args[0].startswith("--method="):
        method = args.pop(0).split("=", 1)[1]
    print(main(args[0], args[1:], method))
