"""``vsml-es compare EXPERIMENT.yaml``: VSML against other meta-learners and tuned SGD/Adam."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vsml_es.commands.train import add_config_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="meta-train every meta-learner, then meta-test them beside SGD/Adam",
        description="Meta-trains each of compare.learners with the experiment's ES settings "
        "and budget, tunes each of metatest.baselines on meta-training data only, and "
        "meta-tests all of them on metatest.datasets with identical streams. Writes a Markdown "
        "table, CSVs and one learning-curve PNG per dataset. Re-running reuses finished "
        "meta-training runs in the output directory.",
    )
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/cpu_generalization.yaml")
    add_config_args(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: runs/NAME-compare)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es.compare import run_compare
    from vsml_es.config import load_config
    from vsml_es.metatest import format_table
    from vsml_es.signals import TrainingInterrupted

    config = load_config(args.experiment, args.overrides)
    out = args.out or Path("runs") / f"{config.name}-compare"
    print(f"output directory: {out}")
    started = time.perf_counter()
    try:
        summaries, _ = run_compare(config, out)
    except TrainingInterrupted as stop:
        print(f"stopped by {stop.signal_name} after generation {stop.generation} (checkpoint "
              "saved). Run the same command again to continue.", file=sys.stderr)
        return stop.exit_code
    print(format_table(summaries))
    print(f"table: {out / 'metatest' / 'table.md'}; learning curves: {out / 'metatest'}")
    print(f"wall time: {(time.perf_counter() - started) / 60:.1f} min")
    return 0
