"""Preparing IDX datasets: verification, locking, cleanup, archives, no-network behaviour.

Uses a tiny IDX dataset written by the test (real files, real hashes, the real builder and
TFDS pipeline) so that every failure path runs in well under a second.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vsml_es.data import DatasetError, fetch, network, tfds_store
from vsml_es.data.builders import IdxBuilder
from vsml_es.data.sources import SPLIT_KEYS, Archive, IdxSpec, SourceFile

SIZES = {"train": 40, "test": 12}
NAMES = {"train_images": "tiny-train-images-idx3-ubyte.gz",
         "train_labels": "tiny-train-labels-idx1-ubyte.gz",
         "test_images": "tiny-test-images-idx3-ubyte.gz",
         "test_labels": "tiny-test-labels-idx1-ubyte.gz"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_tiny_sources(directory: Path) -> dict[str, np.ndarray]:
    """Write four gzipped IDX files (3 classes) and return the arrays they hold."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    arrays = {}
    for split, n in SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, n).astype(np.uint8)
    for key, array in arrays.items():
        (directory / NAMES[key]).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return arrays


def tiny_spec(directory: Path, archive: Archive | None = None) -> IdxSpec:
    """A spec whose published hashes are those of the files in ``directory``."""
    files = []
    for key in SPLIT_KEYS:
        data = (directory / NAMES[key]).read_bytes()
        files.append(SourceFile(key, NAMES[key], (_sha(data),), (_sha(gzip.decompress(data)),)))
    return IdxSpec(name="tiny_idx", title="tiny test set", homepage="https://example.invalid/",
                   files=tuple(files), num_examples=dict(SIZES), class_names=("a", "b", "c"),
                   base_url="http://127.0.0.1:9/", archive=archive)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[IdxSpec, Path, Path, dict[str, np.ndarray]]:
    manual = tmp_path / "sources"
    arrays = write_tiny_sources(manual)
    return tiny_spec(manual), manual, tmp_path / "data", arrays


def _leftovers(data_dir: Path) -> list[str]:
    """Everything in the data dir, lock files included (a finished prepare removes them)."""
    if not data_dir.exists():
        return []
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))


def test_prepare_builds_loads_and_is_idempotent(tiny):
    spec, manual, data_dir, arrays = tiny
    report = tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert "prepared in" in report and str(manual) in report
    for split in SIZES:
        ds = tfds_store._idx_load(spec, split, data_dir)
        assert ds.x.shape == (SIZES[split], 28, 28, 1) and ds.x.dtype == np.uint8
        np.testing.assert_array_equal(ds.x[..., 0], arrays[f"{split}_images"])
        np.testing.assert_array_equal(ds.y, arrays[f"{split}_labels"])
        assert ds.num_classes == 3
    train = arrays["train_images"].astype(np.float64)
    ds = tfds_store._idx_load(spec, "train", data_dir)
    assert ds.mean == pytest.approx(train.mean()) and ds.std == pytest.approx(train.std())
    files = {p: p.stat().st_mtime_ns for p in (data_dir / "tiny_idx").rglob("*")}
    assert "already prepared" in tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert {p: p.stat().st_mtime_ns for p in (data_dir / "tiny_idx").rglob("*")} == files


def test_truncated_source_fails_checksum_and_writes_nothing(tiny):
    spec, manual, data_dir, _ = tiny
    path = manual / NAMES["train_images"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="Checksum mismatch") as err:
        tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert str(path) in str(err.value) and "does not decompress" in str(err.value)
    assert "Nothing was written" in str(err.value)
    assert _leftovers(data_dir) == []


def test_corrupt_byte_fails_checksum(tiny):
    spec, manual, data_dir, _ = tiny
    path = manual / NAMES["test_labels"]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 1  # valid gzip, wrong content
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="Checksum mismatch.*expected"):
        tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert _leftovers(data_dir) == []


def test_recompressed_and_uncompressed_copies_are_accepted(tiny):
    """Repackaged gzip (other header, same content) and plain IDX pass via the content hash."""
    spec, manual, data_dir, arrays = tiny
    gz = manual / NAMES["train_images"]
    gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes()), compresslevel=1, mtime=123))
    labels = manual / NAMES["train_labels"]
    (manual / labels.name.removesuffix(".gz")).write_bytes(gzip.decompress(labels.read_bytes()))
    labels.unlink()
    tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    np.testing.assert_array_equal(tfds_store._idx_load(spec, "train", data_dir).y,
                                  arrays["train_labels"])


def test_missing_file_in_manual_dir_is_named(tiny):
    spec, manual, data_dir, _ = tiny
    (manual / NAMES["test_images"]).unlink()
    with pytest.raises(DatasetError, match=NAMES["test_images"]):
        tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    with pytest.raises(DatasetError, match="not a directory"):
        tfds_store._idx_prepare(spec, data_dir, manual / "nope", False, False)


def test_no_sources_without_download_says_how(tiny):
    spec, _, data_dir, _ = tiny
    with pytest.raises(DatasetError, match="--download") as err:
        tfds_store._idx_prepare(spec, data_dir, None, False, False)
    assert "--manual-dir" in str(err.value)


def test_unprepared_load_names_the_exact_command(tiny, monkeypatch):
    spec, _, data_dir, _ = tiny
    monkeypatch.delenv("VSML_ES_DATA_DIR", raising=False)
    with pytest.raises(DatasetError) as err:
        tfds_store._idx_load(spec, "train", data_dir)
    assert f"vsml-es data prepare tiny_idx --download --data-dir {data_dir}" in str(err.value)


def test_failure_during_build_leaves_nothing(tiny, monkeypatch):
    spec, manual, data_dir, _ = tiny
    original = IdxBuilder._generate_examples

    def failing(self, split):
        for i, example in enumerate(original(self, split)):
            if i == 5:
                raise OSError("disk full (injected)")
            yield example

    monkeypatch.setattr(IdxBuilder, "_generate_examples", failing)
    with pytest.raises(OSError, match="injected"):
        tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert _leftovers(data_dir) == []


def test_download_without_network_fails_fast_with_offline_alternative(tiny, monkeypatch):
    """Port 9 on loopback refuses at once; TFDS's download manager is never reached."""
    spec, _, data_dir, _ = tiny
    import tensorflow_datasets as tfds

    def never(*args, **kwargs):
        raise AssertionError("the download manager must not be reached without network")

    monkeypatch.setattr(tfds.download, "DownloadManager", never)
    with pytest.raises(DatasetError, match="Cannot download tiny_idx") as err:
        tfds_store._idx_prepare(spec, data_dir, None, True, False)
    message = str(err.value)
    assert "127.0.0.1:9" in message and "Offline alternative" in message
    assert "--manual-dir DIR" in message
    assert _leftovers(data_dir) == []


def test_probe_gives_up_on_a_hanging_name_lookup(monkeypatch):
    release = threading.Event()

    def hanging_lookup(*args, **kwargs):
        release.wait(60)
        raise OSError("released")

    monkeypatch.setattr(network.socket, "getaddrinfo", hanging_lookup)
    try:
        with pytest.raises(network.NetworkUnavailable, match="no answer within 0.2 s"):
            network.check_reachable("https://example.invalid/file.gz", timeout=0.2)
    finally:
        release.set()


def zip_sources(manual: Path, zip_dir: Path) -> tuple[Path, Archive]:
    """The four source files in ``zip_dir``/bundle.zip (under gzip/), and its Archive entry."""
    zip_dir.mkdir()
    archive_path = zip_dir / "bundle.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        for name in NAMES.values():
            archive.write(manual / name, f"gzip/{name}")
    return zip_dir, Archive("bundle.zip", "http://127.0.0.1:9/bundle.zip",
                            _sha(archive_path.read_bytes()), archive_path.stat().st_size, "gzip/")


def test_archive_sources_are_verified_and_extracted(tiny, tmp_path):
    spec, manual, data_dir, arrays = tiny
    zip_dir, archive = zip_sources(manual, tmp_path / "zipped")
    spec = replace(spec, archive=archive)
    tfds_store._idx_prepare(spec, data_dir, zip_dir, False, False)
    np.testing.assert_array_equal(tfds_store._idx_load(spec, "test", data_dir).y,
                                  arrays["test_labels"])
    bad = replace(spec, name="tiny_bad", archive=replace(spec.archive, sha256="0" * 64))
    with pytest.raises(DatasetError, match="Checksum mismatch.*bundle.zip"):
        tfds_store._idx_prepare(bad, data_dir, zip_dir, False, False)
    assert not (data_dir / "tiny_bad").exists()


def test_archive_only_members_are_trusted_through_the_verified_archive(tiny, tmp_path):
    """EMNIST ByClass's way: members without hashes of their own are read from the archive
    whose SHA-256 is published, never accepted as loose files; a bad archive is refused."""
    spec, manual, data_dir, arrays = tiny
    zip_dir, archive = zip_sources(manual, tmp_path / "zipped")
    spec = replace(spec, name="tiny_members",
                   files=tuple(replace(f, sha256_gz=(), sha256_raw=()) for f in spec.files),
                   archive=archive)
    assert spec.archive_only
    # Loose files, even the right ones, cannot be verified: refused, naming the archive.
    with pytest.raises(DatasetError, match="lacks tiny_members source files: bundle.zip"):
        tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert not (data_dir / "tiny_members").exists()
    tampered = replace(spec, name="tiny_tampered", archive=replace(spec.archive, sha256="1" * 64))
    with pytest.raises(DatasetError, match="Checksum mismatch.*bundle.zip"):
        tfds_store._idx_prepare(tampered, data_dir, zip_dir, False, False)
    assert not (data_dir / "tiny_tampered").exists()
    tfds_store._idx_prepare(spec, data_dir, zip_dir, False, False)
    loaded = tfds_store._idx_load(spec, "train", data_dir)
    np.testing.assert_array_equal(loaded.x[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(loaded.y, arrays["train_labels"])


def test_emnist_byclass_shares_balanced_verified_archive():
    from vsml_es.data.sources import EMNIST, EMNIST_BYCLASS

    assert EMNIST_BYCLASS.archive == EMNIST.archive and EMNIST_BYCLASS.archive_only
    assert not EMNIST.archive_only
    assert len(EMNIST_BYCLASS.class_names) == 62
    assert {f.filename for f in EMNIST_BYCLASS.files} == {
        f"emnist-byclass-{s}-{k}-ubyte.gz" for s in ("train", "test")
        for k in ("images-idx3", "labels-idx1")}


def test_bad_download_is_deleted(tiny, tmp_path, monkeypatch):
    spec, manual, data_dir, _ = tiny
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for key, name in NAMES.items():
        (fetched / name).write_bytes(b"<html>captive portal</html>" if key == "train_images"
                                     else (manual / name).read_bytes())
    paths = {key: fetched / name for key, name in NAMES.items()}
    monkeypatch.setattr(fetch, "download", lambda *a: fetch.Found("download", paths,
                                                                   downloaded=True))
    with pytest.raises(DatasetError, match="Checksum mismatch"):
        tfds_store._idx_prepare(spec, data_dir, None, True, False)
    assert not any(p.exists() for p in paths.values())
    assert _leftovers(data_dir) == []


KILL_SCRIPT = """
import sys, time, pathlib
sys.path.insert(0, {tests!r})
from test_data_prepare import tiny_spec
from vsml_es.data import tfds_store
from vsml_es.data.builders import IdxBuilder
manual, data_dir, marker = map(pathlib.Path, sys.argv[1:4])
original = IdxBuilder._generate_examples
def stalled(self, split):
    for i, example in enumerate(original(self, split)):
        if i == 5:
            marker.touch()
            time.sleep(600)
        yield example
IdxBuilder._generate_examples = stalled
tfds_store._idx_prepare(tiny_spec(manual), data_dir, manual, False, False)
"""


def test_kill_during_build_then_prepare_again_recovers(tiny, tmp_path):
    """kill -9 mid-build leaves only TFDS's incomplete dir; the next prepare cleans it up."""
    spec, manual, data_dir, arrays = tiny
    script = tmp_path / "stall.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    marker = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, str(script), str(manual), str(data_dir),
                             str(marker)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.05)
        assert list((data_dir / "tiny_idx").glob("incomplete.*"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not tfds_store._is_prepared(tfds_store._idx_builder(spec, data_dir))
    tfds_store._idx_prepare(spec, data_dir, manual, False, False)
    assert not list((data_dir / "tiny_idx").glob("**/incomplete.*"))
    np.testing.assert_array_equal(tfds_store._idx_load(spec, "train", data_dir).y,
                                  arrays["train_labels"])
