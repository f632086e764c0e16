"""``vsml-es train EXPERIMENT.yaml [--set k=v]... [--run-dir DIR]`` or ``--resume RUN_DIR``"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from vsml_es.commands.common import add_config_args, add_run_args, report_stopped
from vsml_es.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="meta-train a VSML learning algorithm, then meta-test it",
        description="Meta-train with ES, write metrics and parameters to a run directory, "
        "then meta-test the result on held-out data.",
    )
    p.add_argument("experiment", nargs="?", default=None,
                   help="experiment YAML file, e.g. experiments/quickstart.yaml (optional with "
                   "--resume: then it must match the run's config up to safe keys)")
    add_config_args(p)
    p.add_argument("--run-dir", type=Path, default=None,
                   help="where to write the run (default: runs/NAME-TIMESTAMP)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its newest valid checkpoint "
                   "(same as 'vsml-es resume RUN_DIR')")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es import run as api
    from vsml_es.experiment import load_experiment

    if args.resume is not None:
        if args.run_dir is not None and Path(args.run_dir) != Path(args.resume):
            raise UserError("--resume RUN_DIR continues in RUN_DIR itself; drop --run-dir.")
        requested = load_experiment(args.experiment, args.overrides) if args.experiment else None
        return finish(lambda: api.resume_training(args.resume, requested, args.overrides,
                                                  metatest=not args.no_metatest,
                                                  restart=args.restart), args.resume)
    if args.experiment is None:
        raise UserError("Give an experiment file, e.g. 'vsml-es train experiments/quickstart.yaml'"
                        ", or continue a run with 'vsml-es train --resume RUN_DIR'.")
    if args.restart:
        raise UserError("--restart goes with --resume RUN_DIR (or 'vsml-es resume RUN_DIR').")
    config = load_experiment(args.experiment, args.overrides)
    run_dir = args.run_dir or api.default_run_dir(config)
    return finish(lambda: api.start_training(config, run_dir, metatest=not args.no_metatest),
                  run_dir)


def finish(train, run_dir: Path) -> int:
    """Run ``train()`` and print its outcome; 128+N if a signal N stopped it."""
    from vsml_es.reporting import format_table
    from vsml_es.signals import TrainingInterrupted

    try:
        result = train()
    except TrainingInterrupted as stop:
        return report_stopped(stop, f"Resume with: vsml-es resume {run_dir}")
    fitness = result.final_fitness
    shown = f"{fitness:.4f}" if math.isfinite(fitness) else (
        "NaN" if math.isnan(fitness) else str(fitness).replace("inf", "infinity"))
    print(f"meta-training: {result.generation} generations in {result.minutes:.1f} min; "
          f"final mean fitness {shown}")
    if result.summaries is not None:
        print(format_table(result.summaries))
        print(f"learning curves: {Path(result.run_dir) / 'metatest'}")
    return 0
