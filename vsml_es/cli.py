"""``vsml-es`` entry point. Each subcommand lives in ``vsml_es/commands/<name>.py`` and exposes
``add_parser(subparsers)``, which registers its arguments and sets ``func(args) -> int``.

User errors (bad config, unknown dataset, ...) are printed as one paragraph with exit code 2,
never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

from vsml_es.errors import UserError

# Order shown in --help. A module missing here is simply not offered.
COMMAND_MODULES = ("train", "resume", "evaluate", "export", "data", "config", "compare",
                   "sweep", "runs", "plot", "introspect")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vsml-es",
        description="Meta-learn learning algorithms with VSML and evolution strategies.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vsml_es.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"vsml_es.commands.{name}":
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        message = textwrap.fill(str(err), width=100, break_long_words=False,
                                break_on_hyphens=False)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a path the checks could not foresee (read-only disk, disk full)
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}. Check that path, its permissions and the "
              "free disk space; runs resume from their last checkpoint.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
