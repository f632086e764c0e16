"""``vsml-es introspect PARAMS --dataset NAME``: what a VSML learner's output units do, and how
fast a label seen once is predicted again, beside tuned SGD."""

from __future__ import annotations

import argparse
from pathlib import Path

from vsml_es.commands.common import add_config_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "introspect", help="trace a VSML learner over an episode (fast association)",
        description="Per-step predictions and the output units' messages and states over one "
        "episode (trace.csv), and the accuracy at the k-th occurrence of a label over many "
        "episodes, VSML beside tuned online SGD (occurrence.csv, occurrence.png).",
    )
    p.add_argument("params", type=Path, metavar="PARAMS|NAME.vsml|RUN_DIR",
                   help="a learner file from vsml-es export, a run's params.npz, or its run "
                   "directory")
    p.add_argument("--dataset", required=True, metavar="NAME[:SPLIT][@HxW]",
                   help="dataset to learn (default split: test)")
    p.add_argument("--steps", type=int, default=None,
                   help="inner steps per episode (default: the run's metatest.steps)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes behind occurrence.csv/png (default: metatest.episodes); "
                   "trace.csv shows the first")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the episodes (default: the run's metatest.seed)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: introspect/ beside PARAMS)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es import run as api

    curves, out = api.introspect_file(args.params, args.dataset, args.steps, args.episodes,
                                      args.seed, args.overrides, args.out)
    for curve in curves.values():
        shown = ", ".join(f"k={k + 1}: {a:.1%}" for k, a in enumerate(curve.accuracy[:3])
                          if curve.counts[k])
        print(f"{curve.label}: accuracy at the k-th occurrence of a label: {shown}")
    print(f"trace and occurrence plot: {out}")
    return 0
