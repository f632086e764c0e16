"""Find, download and verify the source files of an IDX dataset, before any build starts.

Everything here either returns decoded, checksum-verified arrays or raises a
:class:`DatasetError` that says what is wrong and what to do; nothing is written to the
data dir except by a requested download (complete files only, bad ones deleted).
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vsml_es.data.idx import parse_idx
from vsml_es.data.network import NetworkUnavailable, check_reachable
from vsml_es.data.registry import prepare_command
from vsml_es.data.sources import IdxSpec, SourceFile, identify
from vsml_es.errors import DatasetError

_CHUNK = 1 << 22


@dataclass(frozen=True)
class Found:
    """Source files located on disk: one path per file key, or one archive."""

    where: str  # a directory, or "download" for fresh downloads
    files: dict[str, Path]
    archive: Path | None = None
    downloaded: bool = False

    def paths(self) -> list[Path]:
        return [self.archive] if self.archive else list(self.files.values())


def search_dirs(spec: IdxSpec, data_dir: Path, manual_dir: Path | None) -> list[Path]:
    """Where sources are looked for: only ``manual_dir`` if given, else the default places."""
    if manual_dir is not None:
        return [manual_dir]
    return [data_dir / "manual" / spec.name, *(Path(d) for d in spec.system_dirs)]


def _find_in(spec: IdxSpec, directory: Path) -> tuple[Found | None, list[str]]:
    """Locate the sources in one directory; also return the names still missing."""
    files: dict[str, Path] = {}
    missing: list[str] = []
    if spec.archive_only:  # loose members cannot be verified: only the archive will do
        assert spec.archive is not None
        if (directory / spec.archive.filename).is_file():
            return Found(str(directory), {}, archive=directory / spec.archive.filename), []
        return None, [spec.archive.filename]
    for f in spec.files:
        candidates = [directory / f.filename, directory / f.raw_name]
        if spec.archive is not None:
            candidates.append(directory / spec.archive.member_dir / f.filename)
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(f.filename)
        else:
            files[f.key] = hit
    if not missing:
        return Found(str(directory), files), []
    if spec.archive is not None and (directory / spec.archive.filename).is_file():
        return Found(str(directory), {}, archive=directory / spec.archive.filename), []
    return None, missing


def locate(spec: IdxSpec, data_dir: Path, manual_dir: Path | None) -> Found | None:
    """The first search directory holding every source file; ``None`` if there is none.

    An explicit ``manual_dir`` that lacks files is an error naming the missing ones.
    """
    if manual_dir is not None and not manual_dir.is_dir():
        raise DatasetError(f"--manual-dir {manual_dir} is not a directory.")
    for directory in search_dirs(spec, data_dir, manual_dir):
        found, missing = _find_in(spec, directory)
        if found is not None:
            return found
        if manual_dir is not None:
            alt = ""
            if spec.archive_only:
                alt = (" (its members have no published checksums of their own, so only the "
                       "verified archive is accepted, not extracted files)")
            elif spec.archive:
                alt = f" (or {spec.archive.filename}, which holds them)"
            raise DatasetError(
                f"--manual-dir {manual_dir} lacks {spec.name} source files: "
                f"{', '.join(missing)}{alt}. Expected the original files from {spec.homepage}."
            )
    return None


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh, tqdm(total=size, unit="B", unit_scale=True,
                                      desc=f"sha256 {path.name}", mininterval=0.5,
                                      disable=not progress or size < (64 << 20)) as bar:
        while block := fh.read(_CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _mismatch(spec: IdxSpec, source: SourceFile, origin: str, digest: str,
              raw_digest: str | None, reason: str = "") -> DatasetError:
    expected = source.sha256_gz[0]
    if source.sha256_raw:
        expected += f" (or decompressed {source.sha256_raw[0]})"
    other = identify(digest) or (identify(raw_digest) if raw_digest else None)
    hint = f" It is {other}." if other else ""
    return DatasetError(
        f"Checksum mismatch for {origin}: {reason}SHA-256 {digest} is not that of {spec.name}'s "
        f"published {source.filename}, expected {expected}.{hint} The file is corrupt, "
        f"truncated or not the published one; replace it with a fresh copy from "
        f"{spec.homepage}. Nothing was written to the data dir."
    )


def verify_bytes(spec: IdxSpec, source: SourceFile, data: bytes, origin: str) -> bytes:
    """Check ``data`` against the published hashes; return the decompressed IDX content.
    A member without hashes of its own (``archive_only``) comes from the verified archive:
    only decompressed here (``read_verified`` never passes one from anywhere else)."""
    if source.archive_only:
        try:
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetError(f"{origin} does not decompress ({err}).") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest in source.sha256_gz:
        return gzip.decompress(data)
    raw, raw_digest = data, None
    if data[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise _mismatch(spec, source, origin, digest, None,
                            f"it does not decompress ({err}); ") from None
    raw_digest = hashlib.sha256(raw).hexdigest()
    if raw_digest in source.sha256_raw:
        return raw
    raise _mismatch(spec, source, origin, digest, raw_digest)


def _read_archive(spec: IdxSpec, path: Path, progress: bool) -> dict[str, tuple[bytes, str]]:
    assert spec.archive is not None
    digest = sha256_file(path, progress)
    if digest != spec.archive.sha256:
        other = identify(digest)
        raise DatasetError(
            f"Checksum mismatch for {path}: SHA-256 {digest}, expected {spec.archive.sha256} "
            f"({spec.archive.size} bytes; this file has {path.stat().st_size})."
            f"{f' It is {other}.' if other else ''} Replace it with a fresh copy of "
            f"{spec.archive.url}. Nothing was written to the data dir."
        )
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for f in spec.files:
                member = spec.archive.member_dir + f.filename
                out[f.key] = (archive.read(member), f"{path}:{member}")  # CRC-checked
    except (zipfile.BadZipFile, KeyError) as err:
        raise DatasetError(f"{path} is not the expected archive: {err}") from None
    return out


def read_verified(spec: IdxSpec, found: Found, progress: bool = False) -> dict[str, np.ndarray]:
    """Verify every located file and decode it: ``{key: uint8 array}`` for all SPLIT keys."""
    if found.archive is not None:
        blobs = _read_archive(spec, found.archive, progress)
    else:
        if spec.archive_only:  # _find_in never locates such files; guard the trust rule
            raise DatasetError(f"{spec.name} is verified only through its archive "
                               f"{spec.archive.filename if spec.archive else ''}.")
        blobs = {key: (path.read_bytes(), str(path)) for key, path in found.files.items()}
    arrays: dict[str, np.ndarray] = {}
    for f in spec.files:
        data, origin = blobs[f.key]
        raw = verify_bytes(spec, f, data, origin)
        split, kind = f.key.split("_")
        count = spec.num_examples[split]
        if kind == "images":
            arrays[f.key] = parse_idx(raw, what=origin, ndim=3, count=count,
                                      dims=spec.image_shape[:2])
        else:
            labels = parse_idx(raw, what=origin, ndim=1, count=count)
            if labels.max(initial=0) >= len(spec.class_names):
                raise DatasetError(f"{origin}: label {labels.max()} is out of range for "
                                   f"{len(spec.class_names)} classes.")
            arrays[f.key] = labels
    return arrays


def offline_alternative(spec: IdxSpec, data_dir: Path) -> str:
    names = spec.archive.filename if spec.archive else ", ".join(f.filename for f in spec.files)
    if spec.archive_only:
        names += " (the archive itself: its members have no published checksums of their own)"
    text = (f"Offline alternative: copy {names} (from {spec.homepage}) into a directory DIR "
            f"and run '{prepare_command(spec.name, data_dir)} --manual-dir DIR', or put them "
            f"in {data_dir / 'manual' / spec.name}.")
    if spec.offline_hint:
        text += " " + spec.offline_hint
    return text


def download(spec: IdxSpec, download_dir: Path, data_dir: Path) -> Found:
    """Fetch the sources with TFDS's download manager after a bounded reachability check."""
    urls = spec.urls()
    for url in dict.fromkeys(urls.values()):
        try:
            check_reachable(url)
        except NetworkUnavailable as err:
            raise DatasetError(
                f"Cannot download {spec.name}: {err}. {offline_alternative(spec, data_dir)}"
            ) from None
    import tensorflow_datasets as tfds

    manager = tfds.download.DownloadManager(
        download_dir=download_dir, dataset_name=spec.name,
        force_checksums_validation=False, register_checksums=False)
    try:
        paths = {key: Path(p) for key, p in manager.download(urls).items()}
    except Exception as err:  # any download failure becomes a user message
        raise DatasetError(
            f"Downloading {spec.name} failed: {err}. {offline_alternative(spec, data_dir)}"
        ) from None
    if spec.archive is not None:
        return Found("download", {}, archive=paths["archive"], downloaded=True)
    return Found("download", paths, downloaded=True)
