"""``vsml-es resume RUN_DIR [--set k=v]...``: continue a run from its newest valid checkpoint.

The same as ``vsml-es train --resume RUN_DIR``. The resumed run computes exactly what the
uninterrupted run would have (same machine and versions), metrics included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vsml_es.commands.common import add_config_args, add_run_args
from vsml_es.commands.train import finish
from vsml_es.resume import SAFE_TO_CHANGE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    safe = ", ".join(k + "*" if k.endswith(".") else k for k in SAFE_TO_CHANGE)
    p = subparsers.add_parser(
        "resume", help="continue a run from its newest valid checkpoint",
        description="Continue the run in RUN_DIR from its newest valid checkpoint (a corrupt "
        "or half-written one is skipped with a message), cutting the metrics logs back to it. "
        f"--set may change only keys that cannot alter the result: {safe}; e.g. "
        "--set training.generations=600 to train longer.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory")
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es import run as api

    return finish(lambda: api.resume_training(args.run_dir, None, args.overrides,
                                              metatest=not args.no_metatest,
                                              restart=args.restart), args.run_dir)
