"""Arguments that several commands share, and how a stopped run is reported."""

from __future__ import annotations

import argparse
import json
import sys

from vsml_es.signals import TrainingInterrupted


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


def add_ray_address_arg(p: argparse.ArgumentParser, what: str = "evaluate") -> None:
    """``--ray-address``: shorthand for ``--set distributed.address=...``."""
    p.add_argument("--ray-address", dest="overrides", action=_SetKey, key="distributed.address",
                   metavar="auto|HOST:PORT",
                   help=f"{what} on this Ray cluster ('auto': the one started on this machine "
                   "with 'ray start'); default: a private Ray on this machine, loopback only")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """Where populations are evaluated: shared by every command that meta-trains."""
    add_ray_address_arg(p)
    p.add_argument("--workers", dest="overrides", action=_SetKey, key="distributed.workers",
                   metavar="N", type=int,
                   help="Ray workers (default: one per node, one per GPU share with "
                   "distributed.gpus_per_worker); 0 evaluates in this process without Ray")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Options of the training loop, shared by ``train`` and ``resume``."""
    p.add_argument("--no-metatest", action="store_true", help="skip the final meta-test")
    p.add_argument("--restart", action="store_true",
                   help="with resume: start over at generation 0 when every checkpoint of the "
                   "run is unusable (refused otherwise, as it loses their progress)")
    add_backend_args(p)


def report_stopped(stop: TrainingInterrupted, how_to_continue: str) -> int:
    print(f"stopped by {stop.signal_name} after generation {stop.generation} (checkpoint "
          f"saved). {how_to_continue}", file=sys.stderr)
    return stop.exit_code
