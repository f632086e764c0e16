"""``vsml-es evaluate PARAMS|NAME.vsml --dataset NAME``: meta-test saved meta-parameters."""

from __future__ import annotations

import argparse
from pathlib import Path

from vsml_es.commands.common import add_config_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="meta-test saved meta-parameters on a dataset",
        description="Learning curves (accuracy and loss per inner step, averaged over "
        "episodes) of saved meta-parameters beside tuned online SGD; printed as a table and "
        "saved as CSV and PNG.",
    )
    p.add_argument("params", type=Path, metavar="PARAMS|NAME.vsml",
                   help="params.npz from a run directory, or a learner file from vsml-es export")
    p.add_argument("--dataset", action="append", default=None, metavar="NAME[:SPLIT]",
                   help="dataset to learn (repeatable; default: the run's metatest.datasets)")
    p.add_argument("--steps", type=int, default=None, help="inner steps per episode")
    p.add_argument("--episodes", type=int, default=None, help="episodes to average over")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: evaluate/ beside PARAMS)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es import run as api
    from vsml_es.reporting import format_table

    summaries, out = api.evaluate_file(args.params, tuple(args.dataset) if args.dataset else None,
                                       args.steps, args.episodes, args.overrides, args.out)
    print(format_table(summaries))
    print(f"learning curves: {out}")
    return 0
