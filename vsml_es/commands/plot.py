"""``vsml-es plot RUN [RUN ...]``: meta-training curves of runs, seeds pooled."""

from __future__ import annotations

import argparse
from pathlib import Path

METRICS = ("fitness_mean", "accuracy_mean", "mean_norm", "seconds")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot", help="plot meta-training curves of one or several runs",
        description="Fitness, accuracy, parameter norm and time per generation. Runs that "
        "differ only in training.seed are drawn as their mean with a shaded 95% interval "
        "(t, across runs); other runs get a line each, labelled by the settings that differ.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run directories (or directories of runs)")
    p.add_argument("--metric", action="append", choices=METRICS, default=None,
                   help="what to plot (repeatable; default: all four)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE.png",
                   help="default: RUN/plots/meta_training.png for one run, else "
                   "meta_training.png here")
    p.add_argument("--force", action="store_true", help="replace FILE.png if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es.errors import PathError
    from vsml_es.paths import check_output_file
    from vsml_es.runs import find_runs, metrics_problem, plot_runs, read_metrics

    runs = []
    for path in args.runs:
        if not path.is_dir():
            raise PathError(f"'{path}' is not a run directory.")
        found = find_runs(path)
        if not found:
            raise PathError(f"'{path}' holds no vsml-es run (none that vsml-es train made).")
        runs.extend(found)
    for run in runs:
        problem = metrics_problem(run)
        if problem:
            raise PathError(
                f"'{run / 'metrics.jsonl'}' is not the metrics log vsml-es writes: {problem}. "
                "It was damaged or replaced: restore it from a backup (metrics.csv beside it "
                "holds the same rows), or plot the other runs.")
    empty = [str(r) for r in runs if not read_metrics(r)]
    if empty:
        raise PathError(f"These runs have no metrics yet: {', '.join(empty)}.")
    own = len(runs) == 1 and args.output is None
    out = args.output or (runs[0] / "plots" / "meta_training.png" if own
                          else Path("meta_training.png"))
    if out.suffix != ".png":
        raise PathError(f"The plot is a PNG file; give a name ending in .png, not '{out}'.")
    check_output_file(out, "--output", replace_ok=own or args.force)
    groups = plot_runs(runs, out, tuple(args.metric or METRICS))
    for label, members in groups.items():
        print(f"{label}: {len(members)} run(s)")
    print(f"wrote {out}")
    return 0
