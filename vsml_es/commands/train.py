"""``vsml-es train EXPERIMENT.yaml [--set k=v]... [--run-dir DIR]``"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vsml_es.config import Config, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="meta-train a VSML learning algorithm, then meta-test it",
        description="Meta-train with ES, write metrics and parameters to a run directory, "
        "then meta-test the result on held-out data.",
    )
    p.add_argument("experiment", help="experiment YAML file, e.g. experiments/quickstart.yaml")
    add_config_args(p)
    p.add_argument("--run-dir", type=Path, default=None,
                   help="where to write the run (default: runs/NAME-TIMESTAMP)")
    p.add_argument("--no-metatest", action="store_true", help="skip the final meta-test")
    p.set_defaults(func=run)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dot path, e.g. "
                   "--set training.population_size=128 (repeatable)")


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    from vsml_es.metatest import format_table, meta_test
    from vsml_es.trainer import Trainer

    config = load_config(args.experiment, args.overrides)
    run_dir = args.run_dir or default_run_dir(config)
    print(f"run directory: {run_dir}")
    trainer = Trainer(config, run_dir)
    started = time.perf_counter()
    state = trainer.run()
    minutes = (time.perf_counter() - started) / 60
    print(f"meta-training: {state.generation} generations in {minutes:.1f} min; "
          f"final mean fitness {trainer.last_row.get('fitness_mean', float('nan')):.4f}")
    if not args.no_metatest:
        summaries = meta_test(trainer.mean_params(state), config, Path(run_dir) / "metatest",
                              num_features=trainer.spec.task.num_features)
        print(format_table(summaries))
        print(f"learning curves: {Path(run_dir) / 'metatest'}")
    return 0
