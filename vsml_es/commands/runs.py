"""``vsml-es runs [DIR]``: a table of the runs under a directory."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "runs", help="list the runs under a directory with their progress and status",
        description="Every run directory at or below DIR (default: runs/): name, generation / "
        "total, best and last mean fitness, the last meta-test (last-quarter accuracy per "
        "dataset) and status: running, finished, interrupted (killed or stopped: resumable), "
        "crashed, corrupt.")
    p.add_argument("directory", nargs="?", type=Path, default=Path("runs"), metavar="DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es.errors import PathError
    from vsml_es.runs import find_runs, summarize

    if not args.directory.is_dir():
        raise PathError(f"'{args.directory}' is not a directory of runs.")
    runs = [summarize(path) for path in find_runs(args.directory)]
    if not runs:
        print(f"no runs under {args.directory}")
        return 0

    def number(value: float | None) -> str:
        if value is None:
            return "-"
        if math.isnan(value):
            return "NaN"
        return f"{value:.4f}" if math.isfinite(value) else str(value)

    rows = [(str(r.path), r.name, f"{r.generation}/{r.total}", number(r.best_fitness),
             number(r.last_fitness), r.status, r.metatest) for r in runs]
    header = ("RUN", "NAME", "GENERATION", "BEST", "LAST", "STATUS", "META-TEST")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(6)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:6], widths, strict=True))
              + "  " + row[6])
    return 0
