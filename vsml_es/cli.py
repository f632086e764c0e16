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
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        print(f"error: out of memory ({type(err).__name__}: "
              f"{str(err).splitlines()[0][:200] if str(err) else 'RESOURCE_EXHAUSTED'}). "
              f"{MEMORY_KNOBS.get(args.command, MEMORY_KNOBS['train'])} A run resumes from its "
              "last checkpoint.", file=sys.stderr)
        return 2


# What to lower when XLA runs out of memory anyway (the estimates before work missed it).
MEMORY_KNOBS = {
    "train": "Lower training.eval_chunk (members evaluated at once), or "
             "training.population_size, the layer sizes or the input size.",
    "evaluate": "Lower --episodes or --steps, or the meta-test input size (@HxW).",
    "introspect": "Lower --episodes or --steps, or the input size (@HxW).",
}
MEMORY_KNOBS["resume"] = MEMORY_KNOBS["compare"] = MEMORY_KNOBS["sweep"] = MEMORY_KNOBS["train"]


def is_out_of_memory(err: BaseException) -> bool:
    """XLA's RESOURCE_EXHAUSTED (a JaxRuntimeError) or Python's MemoryError."""
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)[:2000] or (
        "Out of memory" in str(err)[:2000] and "jax" in type(err).__module__)


if __name__ == "__main__":
    sys.exit(main())
