"""Named arrays + JSON metadata in one npz (read with allow_pickle=False): a run's
``params.npz`` and the ``.vsml`` learner file. No pickle."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vsml_es.errors import UserError
from vsml_es.storage.atomic import atomic_write_bytes

META_KEY = "__meta_json__"


def save_params(path: Path, params: dict[str, Any], meta: dict[str, Any]) -> None:
    arrays = {k: np.asarray(v) for k, v in params.items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_params(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Parameter file '{path}' does not exist.")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"'{path}' is not a vsml-es parameter file (an .npz archive, as a run's params.npz "
            "or an exported .vsml), or it is truncated or corrupt: it is not a zip archive."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reading checks every member's CRC-32
        meta_raw = arrays.pop(META_KEY, None)
        meta = json.loads(meta_raw.tobytes().decode()) if meta_raw is not None else {}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if "pickle" in str(err):  # numpy's text suggests unsafe loading; we never do that
            err = "it holds object arrays, which would need pickle to load"
        raise UserError(
            f"'{path}' is not a vsml-es parameter file (npz without pickle), or it is truncated "
            f"or corrupt: {err}"
        ) from None
    if not isinstance(meta, dict):
        raise UserError(f"'{path}' has malformed metadata (not a JSON object).")
    return arrays, meta
