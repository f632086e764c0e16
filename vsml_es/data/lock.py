"""An exclusive, process-level file lock, so that concurrent prepares never interleave.

``flock`` locks die with their process, so a killed prepare never leaves a stale lock. The lock
file is removed on release, so nothing is left behind; a waiter that got the lock on a file
another holder has just removed notices (its descriptor no longer names the path) and tries
again on the new file, so two processes never both hold "the" lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def _acquire(path: Path, waiting_message: str) -> int:
    said = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another holder removed the directory just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting_message and not said:
                print(waiting_message, file=sys.stderr, flush=True)
                said = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd  # we hold the lock on the file the path names
        except FileNotFoundError:
            pass  # the previous holder removed it while we waited
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path, waiting_message: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, and removed afterwards); say so when we
    must wait."""
    fd = _acquire(path, waiting_message)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still ours: nobody else can hold a lock on this inode
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the .locks directory, if no other lock lives there
        os.close(fd)  # closing the descriptor releases the lock
