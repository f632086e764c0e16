"""``vsml-es train EXPERIMENT.yaml [--set k=v]... [--run-dir DIR]`` or ``--resume RUN_DIR``"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vsml_es.config import Config, load_config

if TYPE_CHECKING:
    from vsml_es.evaluator import EvalSpec, Evaluator
    from vsml_es.resume import ResumePlan
    from vsml_es.tasks import TaskData
    from vsml_es.trainer import Trainer, TrainState


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


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Options of the training loop, shared by ``train`` and ``resume``."""
    p.add_argument("--no-metatest", action="store_true", help="skip the final meta-test")
    p.add_argument("--ray-address", dest="overrides", action=_SetKey, key="distributed.address",
                   metavar="auto|HOST:PORT",
                   help="evaluate on this Ray cluster ('auto': the one started on this machine "
                   "with 'ray start'); default: a private Ray on this machine, loopback only")
    p.add_argument("--workers", dest="overrides", action=_SetKey, key="distributed.workers",
                   metavar="N", type=int,
                   help="Ray workers (default: one per node, one per GPU share with "
                   "distributed.gpus_per_worker); 0 evaluates in this process without Ray")


class _SetKey(argparse.Action):
    """A flag that is shorthand for ``--set KEY=VALUE`` (so it is validated like one)."""

    def __init__(self, *args: object, key: str, **kwargs: object):
        self.key = key
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 value: object, option_string: str | None = None) -> None:
        overrides = list(getattr(namespace, self.dest, None) or [])
        overrides.append(f"{self.key}={json.dumps(value)}")  # JSON strings are YAML strings
        setattr(namespace, self.dest, overrides)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dot path, e.g. "
                   "--set training.population_size=128 (repeatable)")


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    from vsml_es.cli import UserError
    from vsml_es.resume import check_new_run_dir

    if args.resume is not None:
        if args.run_dir is not None and Path(args.run_dir) != Path(args.resume):
            raise UserError("--resume RUN_DIR continues in RUN_DIR itself; drop --run-dir.")
        requested = load_config(args.experiment, args.overrides) if args.experiment else None
        return resume_run(args.resume, args, requested)
    if args.experiment is None:
        raise UserError("Give an experiment file, e.g. 'vsml-es train experiments/quickstart.yaml'"
                        ", or continue a run with 'vsml-es train --resume RUN_DIR'.")
    config = load_config(args.experiment, args.overrides)
    run_dir = args.run_dir or default_run_dir(config)
    check_new_run_dir(run_dir)
    print(f"run directory: {run_dir}")
    return train_and_test(config, Path(run_dir), args)


def resume_run(run_dir: Path, args: argparse.Namespace, requested: Config | None = None) -> int:
    """Resume with ``requested`` (from an experiment file) or the run's config + --set."""
    from vsml_es.resume import plan_resume

    plan = plan_resume(run_dir, requested, args.overrides if requested is None else ())
    return train_and_test(plan.config, Path(run_dir), args, plan)


def train_and_test(
    config: Config, run_dir: Path, args: argparse.Namespace, resume: ResumePlan | None = None
) -> int:
    """Meta-train (from scratch or a resume plan), then meta-test; 128+N if stopped by signal N."""
    from vsml_es.metatest import format_table, meta_test
    from vsml_es.signals import TrainingInterrupted
    from vsml_es.trainer import Trainer

    if not args.no_metatest:  # a missing meta-test dataset fails now, not after training
        from vsml_es.tasks import check_metatest_datasets

        check_metatest_datasets(config)
    with evaluation(config) as (spec, data, evaluator):  # Ray, if any, stops with the block
        trainer = Trainer(config, run_dir, evaluator=evaluator, spec=spec, data=data)
        state = None
        if resume is not None:
            state = restore(trainer, resume)
        started = time.perf_counter()
        try:
            state = trainer.run(state)
        except TrainingInterrupted as stop:
            print(f"stopped by {stop.signal_name} after generation {stop.generation} "
                  f"(checkpoint saved). Resume with: vsml-es resume {run_dir}", file=sys.stderr)
            return stop.exit_code
    minutes = (time.perf_counter() - started) / 60
    print(f"meta-training: {state.generation} generations in {minutes:.1f} min; "
          f"final mean fitness {trainer.last_row.get('fitness_mean', float('nan')):.4f}")
    if not args.no_metatest:
        summaries = meta_test(trainer.mean_params(state), config, Path(run_dir) / "metatest",
                              num_features=trainer.spec.task.num_features)
        print(format_table(summaries))
        print(f"learning curves: {Path(run_dir) / 'metatest'}")
    return 0


def restore(trainer: Trainer, plan: ResumePlan) -> TrainState | None:
    """Load the plan's checkpoint into ``trainer`` and cut the metrics logs back to it."""
    from vsml_es.checkpoint import CheckpointError
    from vsml_es.cli import UserError
    from vsml_es.resume import rewind

    state = None
    if plan.checkpoint is not None:
        try:
            state = trainer.restore(plan.checkpoint)
        except CheckpointError as err:
            raise UserError(f"Cannot resume from {plan.checkpoint.path}: {err}.") from None
        print(f"resuming from generation {state.generation} ({plan.checkpoint.path})")
    rewind(trainer.run_dir, plan.checkpoint)
    return state


@contextmanager
def evaluation(config: Config) -> Iterator[tuple[EvalSpec, TaskData, Evaluator]]:
    """Task data and the evaluator that ``distributed`` asks for: in-process (workers 0) or on
    Ray (a private local Ray, or the cluster at distributed.address).

    Ray starts before the dataset is loaded (no fork after heavy JAX work) and is shut down on
    the way out, also on errors and Ctrl-C, so no Ray process outlives the command.
    """
    from vsml_es.cli import UserError
    from vsml_es.evaluator import LocalEvaluator, build_eval_spec

    if config.distributed.workers == 0:
        spec, data = build_eval_spec(config)
        yield spec, data, LocalEvaluator(spec, data)
        return
    try:
        from vsml_es import distributed
    except ImportError as err:
        raise UserError(f"Ray evaluation is not available ({err}). Evaluate in this process "
                        "with --workers 0.") from None
    with distributed.ray_session(config.distributed):
        spec, data = build_eval_spec(config)
        evaluator = distributed.RayEvaluator(spec, data, config.distributed)
        print(f"evaluating on {evaluator.describe()}")
        try:
            yield spec, data, evaluator
        finally:
            evaluator.close()
