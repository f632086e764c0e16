"""``vsml-es sweep EXP.yaml --grid KEY=V1,V2 ... --seeds N``: grid x seeds on Ray Tune, one
table across seeds."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from vsml_es.commands.common import add_config_args, add_ray_address_arg


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="meta-train a grid of settings x seeds as Ray Tune trials, one table",
        description="Every combination of the --grid values, each with --seeds seeds "
        "(training.seed + k), is a Ray Tune trial: an ordinary run directory OUT/runs/POINT-"
        "seedK, meta-trained with in-process evaluation and meta-tested. Then OUT/sweep.md and "
        "OUT/sweep.csv hold one row per grid point (mean ± 95% t-interval across seeds of the "
        "final fitness and the meta-test accuracies) and OUT/sweep.png overlays the "
        "meta-training curves. Run the same command again to continue a stopped sweep: "
        "finished trials are skipped, interrupted ones resume from their newest checkpoint.",
    )
    p.add_argument("experiment", help="experiment YAML, e.g. experiments/quickstart.yaml")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config key and its values (repeatable: the grid is every "
                   "combination), e.g. --grid training.sigma=0.05,0.1; values are YAML, so "
                   "--grid model.hidden_layers=[],[32] is two lists")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="seeds per grid point: training.seed + 0..N-1 (default 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: runs/NAME-sweep)")
    add_config_args(p)
    add_ray_address_arg(p, "run the trials (OUT on a file system every node mounts)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="trials at once (default: as many as the CPUs allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                   help="CPUs Ray Tune reserves for each trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G",
                   help="GPUs Ray Tune reserves for each trial (default 0; fractions share)")
    p.add_argument("--no-metatest", action="store_true",
                   help="skip the meta-tests (the table then has the final fitness only)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray Tune's progress and what the trials print")
    p.set_defaults(func=run)


class _StopOnTerm:
    """SIGTERM as Ctrl-C: Ray stops on the way out and every trial stays resumable. The signal
    is remembered, as Ray turns an exception raised inside its calls into a plain
    KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum = signal.SIGINT

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    from vsml_es.experiment import load_experiment
    from vsml_es.sweep import check_trial_resources, plan_sweep, run_sweep

    config = load_experiment(args.experiment, args.overrides)
    out = args.out or Path("runs") / f"{config.name}-sweep"
    plan = plan_sweep(config, args.grid, args.seeds, out, experiment=args.experiment,
                      metatest=not args.no_metatest)
    check_trial_resources(plan, args.cpus_per_trial, args.gpus_per_trial, args.workers)
    states = [t.state for t in plan.trials]
    print(f"sweep: {len(plan.points)} grid point(s) x {plan.seeds} seed(s) = {len(states)} "
          f"trials in {out} ({states.count('done')} finished, {states.count('resume')} to "
          f"resume, {states.count('new')} to start)", flush=True)
    on_term = _StopOnTerm()
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        result = run_sweep(plan, cpus_per_trial=args.cpus_per_trial,
                           gpus_per_trial=args.gpus_per_trial, concurrent=args.workers,
                           verbose=args.verbose,
                           log=lambda message: print(message, flush=True))
    except KeyboardInterrupt:
        print(f"sweep stopped by {signal.Signals(on_term.signum).name}; every trial keeps its "
              "run directory. Run the same command again to continue.", file=sys.stderr)
        return 128 + on_term.signum
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(result.table)
    print(f"table: {out / 'sweep.md'} and {out / 'sweep.csv'}; curves: {out / 'sweep.png'}; "
          f"runs: {out / 'runs'}")
    if result.failed:
        for name, error in result.failed.items():
            print(f"error: trial {name} failed: {error}", file=sys.stderr)
        print(f"{len(result.failed)} of {len(plan.trials)} trials failed; their run "
              "directories keep their checkpoints. Fix the cause and run the same command "
              "again to continue.", file=sys.stderr)
        return 1
    return 0
