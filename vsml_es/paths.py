"""Paths the user gives: checked before any work, so nothing of theirs is overwritten.

A new run goes into a new or empty directory; output directories of ``evaluate`` hold only
files that vsml-es writes there; every directory must be writable. Each problem is a
:class:`~vsml_es.errors.PathError` that says which path and what to do.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from vsml_es.config import read_yaml_file
from vsml_es.errors import ConfigError, PathError


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a vsml-es run: checkpoints or metrics, or at least the resolved
    config that every run writes first (a run killed before its first checkpoint)."""
    if (run_dir / "checkpoints").is_dir() or (run_dir / "metrics.jsonl").is_file():
        return True
    try:
        saved = read_yaml_file(run_dir / "config.yaml", "config")
    except (ConfigError, OSError):
        return False
    return isinstance(saved, dict) and {"name", "model", "task", "training"} <= set(saved)


def check_new_run_dir(run_dir: Path) -> None:
    """A fresh run goes into a new or empty directory it can write: never into another run's
    (checkpoints would mix), never over files of the user's."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PathError(f"--run-dir '{run_dir}' is a file; choose a directory.")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if holds_run(run_dir):
            raise PathError(
                f"'{run_dir}' already holds a run. Continue it with 'vsml-es resume {run_dir}', "
                "or choose another --run-dir."
            )
        raise PathError(
            f"'{run_dir}' is not empty and holds no vsml-es run; a new run only goes into a "
            "new or empty directory, so nothing of yours is overwritten. Choose another "
            "--run-dir."
        )
    check_writable(run_dir, "--run-dir")


def check_writable(path: Path, what: str) -> None:
    """``path`` (a directory, existing or to be made) can be created and written."""
    existing = Path(path).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PathError(f"{what} '{path}' lies under '{existing}', which is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PathError(f"{what} '{path}' cannot be written: no write permission on "
                          f"'{existing}'. Choose a directory you can write.")


def check_output_dir(path: Path, ours: tuple[str, ...], what: str) -> None:
    """``path`` is new, or a directory holding only files named like ``ours`` (patterns of the
    files vsml-es writes there, which a re-run replaces), and writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} '{path}' is a file; choose a directory.")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir()
                         if not any(fnmatch.fnmatch(p.name, pattern) for pattern in ours))
        if foreign:
            raise PathError(
                f"{what} '{path}' holds files vsml-es did not write ({', '.join(foreign[:5])}"
                f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty directory so "
                "nothing of yours is overwritten."
            )
    check_writable(path, what)


def check_output_file(path: Path, what: str, replace_ok: bool = False) -> None:
    """A file about to be written: not a directory, its directory writable, and not an existing
    file unless ``replace_ok``."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} '{path}' is a directory; give a file name.")
    if path.exists() and not replace_ok:
        raise PathError(f"{what} '{path}' exists; choose another name or move it away first "
                        "(nothing is overwritten).")
    check_writable(path.parent, what)
