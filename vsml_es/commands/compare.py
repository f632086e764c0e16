"""``vsml-es compare EXPERIMENT.yaml``: VSML against other meta-learners and tuned SGD/Adam."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vsml_es.commands.common import add_backend_args, add_config_args, report_stopped


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="meta-train every meta-learner, then meta-test them beside SGD/Adam",
        description="Meta-trains each of compare.learners with the experiment's ES settings "
        "and budget (on the embedded Ray, a cluster, or in-process like 'train'), tunes each "
        "of metatest.baselines on meta-training data only, and meta-tests all of them on "
        "metatest.datasets with identical streams. Writes a Markdown table, CSVs and one "
        "learning-curve PNG per dataset. Re-running reuses finished meta-training runs in the "
        "output directory.",
    )
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/cpu_generalization.yaml")
    add_config_args(p)
    add_backend_args(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: runs/NAME-compare)")
    p.add_argument("--seeds", type=int, default=1,
                   help="meta-training seeds (training.seed + 0..N-1), each compared in "
                   "OUT/seedS; N > 1 adds a table and curves pooled across seeds in OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es import run as api
    from vsml_es.experiment import load_experiment
    from vsml_es.reporting import format_table
    from vsml_es.seed_pool import format_pooled_table
    from vsml_es.signals import TrainingInterrupted

    config = load_experiment(args.experiment, args.overrides)
    out = args.out or Path("runs") / f"{config.name}-compare"
    print(f"output directory: {out}")
    started = time.perf_counter()
    try:
        if args.seeds == 1:
            summaries, _ = api.compare(config, out)
        else:
            rows = api.compare_seeds(config, out, args.seeds)
    except TrainingInterrupted as stop:
        return report_stopped(stop, "Run the same command again to continue.")
    if args.seeds == 1:
        print(format_table(summaries))
        print(f"table: {out / 'metatest' / 'table.md'}; learning curves: {out / 'metatest'}")
    else:
        print(format_pooled_table(rows))
        print(f"table across seeds: {out / 'table.md'}; learning curves: {out}; each seed: "
              f"{out / 'seedS'}")
    print(f"wall time: {(time.perf_counter() - started) / 60:.1f} min")
    return 0
