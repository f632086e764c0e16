"""Parse the IDX format of MNIST and its look-alikes (Fashion-MNIST, KMNIST, EMNIST).

Parsing is strict: a wrong magic number, an unexpected shape or a short payload is an error,
never a silently misshaped array, because the file may come from any directory the user names.
"""

from __future__ import annotations

import numpy as np

from vsml_es.errors import DatasetError

_UBYTE = 0x08  # the only element type the MNIST family uses


def parse_idx(data: bytes, *, what: str, ndim: int, count: int | None = None,
              dims: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode one uncompressed IDX file into a uint8 array of ``ndim`` dimensions.

    ``what`` names the file in error messages; ``count`` and ``dims`` (all but the first
    dimension) are checked when given.
    """
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{what}: file is too short to be an IDX file ({len(data)} bytes).")
    zero, dtype, found_ndim = data[0] | data[1] << 8, data[2], data[3]
    if zero != 0 or dtype != _UBYTE or found_ndim != ndim:
        raise DatasetError(
            f"{what}: not an IDX file of {ndim}-D unsigned bytes (magic bytes "
            f"{data[:4].hex()}, expected 0000080{ndim})."
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if count is not None and shape[0] != count:
        raise DatasetError(f"{what}: holds {shape[0]} items, expected {count}.")
    if dims is not None and shape[1:] != dims:
        raise DatasetError(f"{what}: item shape {shape[1:]}, expected {dims}.")
    header = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise DatasetError(
            f"{what}: payload is {len(data) - header} bytes, the header promises {expected}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
