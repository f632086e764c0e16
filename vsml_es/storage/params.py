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


MAX_UNPACKED_BYTES = 1 << 32  # 4 GiB: far above any learner, far below a zip bomb


def load_params(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Named arrays and metadata of a parameter file; anything else is a :class:`UserError`.

    The file is untrusted: every way it can be malformed (not a zip, damaged headers, object
    arrays, members that unpack to gigabytes, metadata that is not a JSON object, non-numeric
    or non-finite arrays) ends in one message, never in a traceback or in pickle.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"Parameter file '{path}' is a directory; give a params.npz or .vsml "
                        "file.")
    if not path.is_file():
        raise UserError(f"Parameter file '{path}' does not exist.")

    def corrupt(why: object) -> UserError:
        return UserError(
            f"'{path}' is not a vsml-es parameter file (an .npz archive without pickle, as a "
            f"run's params.npz or an exported .vsml), or it is truncated or corrupt: {why}"
        )

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_BYTES:
            raise corrupt(f"its members unpack to {unpacked} bytes")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}  # reading checks every member's CRC-32
        meta_raw = arrays.pop(META_KEY, None)
        meta = json.loads(meta_raw.tobytes().decode()) if meta_raw is not None else {}
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 (numpy's zip/npy parsers raise many kinds)
        text = str(err)
        if "pickle" in text:  # numpy's text suggests unsafe loading; we never do that
            text = "it holds object arrays, which would need pickle to load"
        raise corrupt(text or type(err).__name__) from None
    if not isinstance(meta, dict):
        raise UserError(f"'{path}' has malformed metadata (not a JSON object).")
    for name, value in arrays.items():
        if value.dtype.kind not in "fiub":
            raise corrupt(f"array '{name}' has dtype {value.dtype}, not numbers")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise UserError(f"'{path}' holds non-finite values (NaN or infinity) in '{name}'; "
                            "a learner with them predicts nothing. Export it again from a "
                            "checkpoint before the values diverged ('vsml-es export RUN "
                            "--checkpoint best').")
    return arrays, meta
