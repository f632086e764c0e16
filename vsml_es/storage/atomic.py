"""Writes that a kill cannot leave half done: temporary file or directory, fsync, rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_synced(path: Path, payload: bytes) -> None:
    """Write ``payload`` and fsync it (the caller renames it into place)."""
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write through a temporary file in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and learner files are for sharing
        write_synced(Path(tmp), payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_directory(final: Path, fill: Callable[[Path], None]) -> Path:
    """Build a directory with ``fill(tmp_dir)`` beside ``final``, then rename it into place.

    An existing ``final`` (e.g. a corrupt checkpoint of the same name) is first renamed to a
    ``.trash-*`` sibling, which the caller's cleanup removes.
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; a run directory is shared like its other files
        fill(tmp)
        fsync_dir(tmp)
        if final.exists():
            final.rename(parent / f".trash-{final.name}-{os.urandom(4).hex()}")
        os.replace(tmp, final)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
