"""Paths the user gives: checked before any work, so nothing of theirs is overwritten.

A new run goes into a new or empty directory; output directories of ``evaluate`` hold only
files that vsml-es writes there; every directory must be writable. Each problem is a
:class:`~vsml_es.errors.PathError` that says which path and what to do.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from vsml_es.errors import PathError
from vsml_es.storage.atomic import atomic_write_bytes
from vsml_es.version import __version__

RUN_MARKER = ".vsml-es-run"  # written first into every run directory vsml-es makes
MARKER_FORMAT = "vsml-es-run"
_STATUS_KEYS = {"state", "generation", "pid", "host", "updated"}  # runs.write_status's record


def mark_run_dir(run_dir: Path) -> None:
    """Claim ``run_dir`` as a vsml-es run: the marker that :func:`holds_run` looks for, written
    (atomically) before anything else of the run."""
    marker = Path(run_dir) / RUN_MARKER
    if _marker_ok(marker):
        return
    record = {"format": MARKER_FORMAT, "version": 1, "vsml_es": __version__,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_bytes(marker, json.dumps(record).encode())


def _marker_ok(marker: Path) -> bool:
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == MARKER_FORMAT


def holds_run(run_dir: Path) -> bool:
    """Whether vsml-es made ``run_dir``: its run marker, or (runs written before the marker
    existed) a file only vsml-es writes: a checkpoint manifest, a params.npz of a run, or the
    run's status record. A config.yaml or metrics.jsonl alone proves nothing: they may be the
    user's own files, which must never be taken for a run (resume would replace them)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    if _marker_ok(run_dir / RUN_MARKER):
        return True
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        for path in checkpoints.glob("gen-*/MANIFEST.json"):
            try:
                if json.loads(path.read_text()).get("format") == "vsml-es-checkpoint":
                    return True
            except (OSError, ValueError, AttributeError):
                continue
    try:
        status = json.loads((run_dir / "status.json").read_text())
        if isinstance(status, dict) and set(status) == _STATUS_KEYS:
            return True
    except (OSError, ValueError):
        pass
    return _params_file_of_a_run(run_dir / "params.npz")


def _params_file_of_a_run(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("__meta_json__.npy")
            if info.file_size > 1 << 24:
                return False
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["__meta_json__"].tobytes().decode())
    except Exception:  # noqa: BLE001 (not a zip, no metadata, damaged: not proof of a run)
        return False
    return isinstance(meta, dict) and meta.get("format") == "vsml-es-params"


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
