"""``vsml-es config [EXPERIMENT] [--set k=v]...``: print the resolved, validated config."""

from __future__ import annotations

import argparse

import yaml

from vsml_es.commands.common import add_config_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config", help="print the resolved config (defaults + file + --set), every key")
    p.add_argument("experiment", nargs="?", default=None, help="experiment YAML (optional)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es.config import config_to_dict
    from vsml_es.experiment import load_experiment

    config = load_experiment(args.experiment, args.overrides)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0
