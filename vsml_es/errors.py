"""The ground floor: the errors a user can fix, and how messages reach the user.

Every module raises a subclass of :class:`UserError` for a problem the user can fix (a bad
config value, a missing dataset, a run that cannot be resumed, a bad learner file); the CLI
prints it as one paragraph with exit code 2 and never a traceback. Nothing here imports another
vsml-es module, so every layer can use it.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable

Report = Callable[[str], None]  # where warnings and progress lines go (stderr by default)


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A bad experiment config: unknown key, wrong type, value out of range."""


class DatasetError(UserError, ValueError):
    """A dataset name, split, shape or preparation problem."""


class ResumeError(UserError):
    """A run that cannot be resumed (or started) as asked."""


class PathError(UserError):
    """A path the user gave that cannot be used as asked (a file for a directory, not empty,
    not writable, would overwrite something)."""


class LearnerError(UserError, ValueError):
    """Bad input to a learner, or a learner file that cannot be used."""


class ClusterError(UserError):
    """Ray could not be started or joined, or cannot place the requested workers."""


class WorkerError(UserError):
    """A shard failed on every try (e.g. a worker out of memory): the run cannot go on."""


class DivergedError(UserError):
    """Meta-training produced non-finite parameters: the run cannot continue as configured."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupt, half-written, for another setup). Not a user
    error by itself: callers skip to an older checkpoint or wrap it in a :class:`ResumeError`."""


def report(message: str) -> None:
    """The default :data:`Report`: one line to stderr, flushed (progress survives a kill)."""
    print(message, file=sys.stderr, flush=True)


def closest(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice closest to a misspelt ``name``, if any is close enough."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest choice, or an empty string."""
    close = closest(name, choices, cutoff)
    return f" Did you mean '{close}'?" if close else ""


def unknown_choice(what: str, name: str, choices: Iterable[str]) -> str:
    """One wording for every "not one of the names I know" message."""
    choices = list(choices)
    return f"{what} is '{name}'.{did_you_mean(name, choices)} Valid values: {', '.join(choices)}."
