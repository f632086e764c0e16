"""Real Fashion-MNIST through the TFDS builder path: prepare (twice at once) → data_source.

Reads Debian's ``dataset-fashion-mnist`` files (installed by ``.ci/run``); outside CI the module
is skipped when the package is missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsml_es.data import DatasetError, load_dataset, prepare_dataset, tfds_store
from vsml_es.data.fetch import verify_bytes
from vsml_es.data.sources import FASHION_MNIST
from vsml_es.experiment import load_experiment
from vsml_es.tasks import check_datasets_ready, check_metatest_fits, load_task

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"

DEBIAN_DIR = Path(FASHION_MNIST.system_dirs[0])
if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must install dataset-fashion-mnist ({DEBIAN_DIR} is missing)")
    pytest.skip("apt-get install dataset-fashion-mnist to run these tests",
                allow_module_level=True)


def _raw_sha(array: np.ndarray) -> str:
    """SHA-256 of the IDX file that holds ``array`` (header + bytes)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return hashlib.sha256(header + array.astype(np.uint8).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Two CLI processes prepare Fashion-MNIST into one fresh data dir at the same time."""
    data_dir = tmp_path_factory.mktemp("tfds")
    env = {**os.environ, "VSML_ES_DATA_DIR": str(data_dir / "unused-default")}
    cmd = [sys.executable, "-m", "vsml_es.cli", "data", "prepare", "fashion_mnist",
           "--data-dir", str(data_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return data_dir, results


def test_concurrent_prepares_build_once(prepared):
    data_dir, results = prepared
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    outputs = sorted(r.stdout.strip() for r in results)
    assert outputs == [f"fashion_mnist: already prepared in {data_dir}.",
                       f"fashion_mnist: prepared in {data_dir} from {DEBIAN_DIR}."]
    versions = [p.name for p in (data_dir / "fashion_mnist").iterdir()]
    assert versions == ["1.0.0"]  # no incomplete.* left over
    assert not (data_dir / "unused-default").exists()


def test_splits_shapes_class_counts_and_checksums(prepared):
    """The arrays read back through TFDS re-create the published IDX files bit for bit."""
    data_dir, _ = prepared
    train = load_dataset("fashion_mnist", "train", data_dir)
    test = load_dataset("fashion_mnist", "test", data_dir)
    assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
    assert train.x.dtype == np.uint8 and train.num_classes == 10
    np.testing.assert_array_equal(np.bincount(train.y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.y), [1000] * 10)
    published = {f.key: f.sha256_raw[0] for f in FASHION_MNIST.files}
    assert _raw_sha(train.x[..., 0]) == published["train_images"]
    assert _raw_sha(train.y) == published["train_labels"]
    assert _raw_sha(test.x[..., 0]) == published["test_images"]
    assert _raw_sha(test.y) == published["test_labels"]
    # Fashion-MNIST's widely quoted normalization stats: mean 0.2860, std 0.3530 (of 1.0).
    assert train.mean / 255 == pytest.approx(0.2860, abs=1e-4)
    assert train.std / 255 == pytest.approx(0.3530, abs=1e-4)
    assert test.mean == train.mean  # dataset-standard: train statistics for every split
    assert train.info["class_names"][9] == "Ankle boot"
    assert load_dataset("fashion_mnist", "train", data_dir) is train  # cached per process


def test_fast_decoding_matches_tfds_decoding(prepared):
    data_dir, _ = prepared
    builder = tfds_store._idx_builder(FASHION_MNIST, data_dir)
    source = builder.as_data_source(split="test")
    x, y = tfds_store.read_source(source, (28, 28, 1), fast=True)
    for i in np.random.default_rng(0).choice(len(source), 300, replace=False):
        example = source[int(i)]  # TFDS's own decoding
        np.testing.assert_array_equal(example["image"], x[i])
        assert example["label"] == y[i]


def test_prepare_again_is_a_no_op(prepared):
    data_dir, _ = prepared
    stamp = {p: p.stat().st_mtime_ns for p in (data_dir / "fashion_mnist").rglob("*")}
    assert "already prepared" in prepare_dataset("fashion_mnist", data_dir)
    assert {p: p.stat().st_mtime_ns for p in (data_dir / "fashion_mnist").rglob("*")} == stamp


def test_debian_repackaged_files_verify_by_content():
    """Debian's .gz differ from upstream's (no file name in the header); content matches."""
    source = FASHION_MNIST.file("test_labels")
    data = (DEBIAN_DIR / source.filename).read_bytes()
    assert hashlib.sha256(data).hexdigest() not in source.sha256_gz
    assert hashlib.sha256(verify_bytes(FASHION_MNIST, source, data, "x")).hexdigest() \
        == source.sha256_raw[0]


def test_fashion_files_offered_as_mnist_are_named(tmp_path):
    manual = tmp_path / "looks-like-mnist"
    manual.mkdir()
    for f in FASHION_MNIST.files:
        (manual / f.filename).symlink_to(DEBIAN_DIR / f.filename)
    with pytest.raises(DatasetError, match="It is fashion_mnist's train-images-idx3-ubyte"):
        prepare_dataset("mnist", tmp_path / "data", manual_dir=manual)
    assert not (tmp_path / "data" / "mnist").exists()


def test_quickstart_meta_tests_fashion_mnist_at_the_trained_input_size(prepared):
    """The quickstart's meta-test datasets load through the same preprocessing path."""
    data_dir, _ = prepared
    config = load_experiment(QUICKSTART, [f"task.data_dir={data_dir}"])
    assert "fashion_mnist:test" in config.metatest.datasets
    check_datasets_ready(config.task, config.metatest)  # raises if missing
    check_metatest_fits(config.task, config.metatest, 64)  # or if it misfits
    t, mt = config.task, config.metatest
    task, data = load_task("fashion_mnist:test", "test", 5, t.num_classes, True, t.data_dir,
                           num_features=64, preprocess=mt.preprocess)
    assert task.num_features == 64 and len(data.y) == 10000
