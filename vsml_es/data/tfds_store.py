"""Datasets stored in a TFDS data dir as ArrayRecord and read with TFDS's data sources.

Two kinds: the IDX family (own builders, built offline from verified files, no TensorFlow)
and other TFDS datasets (TFDS's own builders, which need TensorFlow to *prepare*; reading a
prepared ArrayRecord copy needs only numpy). TFDS is imported only when a dataset is touched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import vsml_es.data.fetch as fetch
from vsml_es.data.lock import file_lock
from vsml_es.data.registry import (
    ArrayDataset,
    DatasetStatus,
    prepare_command,
    register,
)
from vsml_es.data.sources import IDX_SPECS, IdxSpec
from vsml_es.errors import DatasetError

LOCK_DIR = ".locks"


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """Silence absl's warnings about empty variant folders while we probe the data dir."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _is_prepared(builder) -> bool:
    with _quiet_tfds():
        return bool(builder.is_prepared())


def _tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


# ------------------------------------------------------------------------------------------
# Reading


def _fast_records(records: list[bytes], keys: tuple[str, str]) -> tuple[list[bytes], np.ndarray]:
    """Decode (bytes image, int label) tf.Example records with protobuf directly.

    TFDS's generic per-example decoding is ~5x slower; the result is cross-checked against
    it on the first and last record by the caller.
    """
    from tensorflow_datasets.proto import tf_example_pb2

    image_key, label_key = keys
    images: list[bytes] = []
    labels = np.empty(len(records), dtype=np.int64)
    for i, record in enumerate(records):
        feature = tf_example_pb2.Example.FromString(record).features.feature
        images.append(feature[image_key].bytes_list.value[0])
        labels[i] = feature[label_key].int64_list.value[0]
    return images, labels


def read_source(source, image_shape: tuple[int, ...], fast: bool) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a TFDS data source as ``(x uint8 [N, *shape], y int32 [N])``."""
    n = len(source)
    if n == 0:
        return np.zeros((0, *image_shape), np.uint8), np.zeros((0,), np.int32)
    if fast:
        records = source.data_source.__getitems__(range(n))
        blobs, labels = _fast_records(records, ("image", "label"))
        x = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(n, *image_shape)
        for i in (0, n - 1):  # guard against any change of TFDS's encoding
            ref = source[i]
            if not (np.array_equal(ref["image"], x[i]) and int(ref["label"]) == labels[i]):
                return read_source(source, image_shape, fast=False)
        return x, labels.astype(np.int32)
    items = source.__getitems__(range(n))
    x = np.stack([np.asarray(item["image"], dtype=np.uint8) for item in items])
    y = np.fromiter((int(item["label"]) for item in items), dtype=np.int32, count=n)
    return x, y


# ------------------------------------------------------------------------------------------
# IDX family: own builders


def _idx_builder(spec: IdxSpec, data_dir: Path, **kwargs):
    from vsml_es.data.builders import idx_builder_class

    with _quiet_tfds():
        return idx_builder_class(spec)(data_dir=str(data_dir), **kwargs)


def _idx_not_prepared(spec: IdxSpec, data_dir: Path) -> str:
    found = None
    with contextlib.suppress(DatasetError):
        found = fetch.locate(spec, data_dir, None)
    if found is not None:
        return f"run '{prepare_command(spec.name, data_dir)}' (source files in {found.where})"
    return (f"run '{prepare_command(spec.name, data_dir, download=True)}' (downloads once), or "
            f"'{prepare_command(spec.name, data_dir)} --manual-dir DIR' with the original files"
            + (f". {spec.offline_hint}" if spec.offline_hint else ""))


def _idx_status(spec: IdxSpec, data_dir: Path) -> DatasetStatus:
    builder = _idx_builder(spec, data_dir)
    if _is_prepared(builder):
        return DatasetStatus(True, f"prepared in {data_dir}")
    return DatasetStatus(False, _idx_not_prepared(spec, data_dir))


def _idx_load(spec: IdxSpec, split: str, data_dir: Path) -> ArrayDataset:
    builder = _idx_builder(spec, data_dir)
    if not _is_prepared(builder):
        raise DatasetError(
            f"Dataset '{spec.name}' is not prepared in {data_dir}: "
            f"{_idx_not_prepared(spec, data_dir)}."
        )
    with _quiet_tfds():
        source = builder.as_data_source(split=split)
    x, y = read_source(source, spec.image_shape, fast=True)
    meta = builder.info.metadata
    return ArrayDataset(
        spec.name, split, x, y, num_classes=len(spec.class_names),
        mean=float(meta["mean"]), std=float(meta["std"]),
        info={"source": f"tfds:{builder.name}/{builder.version}", "path": str(builder.data_dir),
              "class_names": list(spec.class_names), "homepage": spec.homepage},
    )


@contextlib.contextmanager
def _clean_on_failure(dataset_dir: Path) -> Iterator[None]:
    """Leave no partial build behind: drop ``incomplete.*`` dirs (and a new empty parent)."""
    existed = dataset_dir.exists()
    _drop_incomplete(dataset_dir)  # leftovers of a killed earlier run
    try:
        yield
    except BaseException:
        _drop_incomplete(dataset_dir)
        if not existed and dataset_dir.exists() and not any(dataset_dir.iterdir()):
            dataset_dir.rmdir()
        raise


def _drop_incomplete(dataset_dir: Path) -> None:
    if dataset_dir.is_dir():
        for leftover in dataset_dir.glob("**/incomplete.*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _lock(data_dir: Path, name: str):
    return file_lock(data_dir / LOCK_DIR / f"{name}.lock",
                     f"Waiting for another 'vsml-es data prepare {name}' to finish ...")


def _idx_prepare(spec: IdxSpec, data_dir: Path, manual_dir: Path | None, download: bool,
                 progress: bool) -> str:
    import tensorflow_datasets as tfds

    with _lock(data_dir, spec.name):
        if _is_prepared(_idx_builder(spec, data_dir)):
            return f"{spec.name}: already prepared in {data_dir}."
        found = fetch.locate(spec, data_dir, manual_dir)
        if found is None and not download:
            raise DatasetError(
                f"No {spec.name} source files found (looked in "
                f"{', '.join(map(str, fetch.search_dirs(spec, data_dir, None)))}). Add "
                f"--download to fetch them once, or --manual-dir DIR. "
                f"{fetch.offline_alternative(spec, data_dir)}"
            )
        if found is None:
            found = fetch.download(spec, data_dir / "downloads" / spec.name, data_dir)
        try:
            arrays = fetch.read_verified(spec, found, progress)
        except DatasetError:
            if found.downloaded:  # never keep a bad download around
                for path in found.paths():
                    path.unlink(missing_ok=True)
            raise
        splits = {s: (arrays[f"{s}_images"][..., None], arrays[f"{s}_labels"])
                  for s in spec.num_examples}
        builder = _idx_builder(spec, data_dir, arrays=splits, progress=progress)
        tfds.disable_progress_bar()  # ours is enough
        with _clean_on_failure(data_dir / spec.name), \
                tempfile.TemporaryDirectory(prefix="vsml-es-dl-") as scratch, _quiet_tfds(), \
                contextlib.redirect_stdout(io.StringIO()):  # TFDS's "Downloading ..." lines
            builder.download_and_prepare(
                download_dir=scratch, file_format="array_record",
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return f"{spec.name}: prepared in {data_dir} from {found.where}."


for _spec in IDX_SPECS.values():
    def _bind(spec: IdxSpec) -> None:
        register(
            spec.name, description=spec.title, num_classes=len(spec.class_names),
            example_shape=spec.image_shape, source="TFDS ArrayRecord (own IDX builder)",
            status=lambda data_dir: _idx_status(spec, data_dir),
            prepare=lambda d, m, dl, p: _idx_prepare(spec, d, m, dl, p),
        )(lambda split, data_dir: _idx_load(spec, split, data_dir))

    _bind(_spec)


# ------------------------------------------------------------------------------------------
# Other TFDS datasets: TFDS's own builders


@dataclass(frozen=True)
class ExternalSpec:
    name: str
    tfds_name: str
    title: str
    num_classes: int
    stored_shape: tuple[int, int, int]  # as TFDS stores it
    channels: int  # channels kept on load (Omniglot's three are identical)
    splits: dict[str, str]  # our split -> TFDS split
    # Dataset-standard stats in raw 0..255 units: the paper's published [0, 1] values × 255.
    mean: float
    std: float


EXTERNAL_SPECS = {s.name: s for s in (
    ExternalSpec("cifar10", "cifar10", "CIFAR-10 natural images", 10, (32, 32, 3), 3,
                 {"train": "train", "test": "test"}, 0.4733630120754242 * 255,
                 0.2515689432621002 * 255),
    ExternalSpec("svhn_cropped", "svhn_cropped", "SVHN house-number digits (cropped)", 10,
                 (32, 32, 3), 3, {"train": "train", "test": "test"},
                 0.4514186382293701 * 255, 0.19929124414920807 * 255),
    ExternalSpec("omniglot", "omniglot", "Omniglot characters (1623 classes)", 1623,
                 (105, 105, 3), 1, {"train": "train", "test": "test"},
                 0.9220603108406067 * 255, 0.26807650923728943 * 255),
)}


def _external_builder(spec: ExternalSpec, data_dir: Path):
    import tensorflow_datasets as tfds

    with _quiet_tfds():
        return tfds.builder(spec.tfds_name, data_dir=str(data_dir))


def _external_how(spec: ExternalSpec, data_dir: Path) -> str:
    command = prepare_command(spec.name, data_dir, download=True)
    if _tensorflow_installed():
        return f"run '{command}' (downloads once through TFDS's own {spec.tfds_name} builder)"
    return (f"preparing it uses TFDS's own '{spec.tfds_name}' builder, which needs TensorFlow: "
            f"run 'pip install tensorflow', then '{command}' (downloads once; reading the "
            "prepared copy needs no TensorFlow)")


def _external_status(spec: ExternalSpec, data_dir: Path) -> DatasetStatus:
    builder = _external_builder(spec, data_dir)
    if not _is_prepared(builder):
        return DatasetStatus(False, _external_how(spec, data_dir))
    if builder.info.file_format is None or builder.info.file_format.value != "array_record":
        return DatasetStatus(False, f"stored as {builder.info.file_format}, not ArrayRecord; "
                                    + _external_how(spec, data_dir))
    return DatasetStatus(True, f"prepared in {data_dir}")


def _external_load(spec: ExternalSpec, split: str, data_dir: Path) -> ArrayDataset:
    import tensorflow_datasets as tfds

    status = _external_status(spec, data_dir)
    if not status.available:
        raise DatasetError(f"Dataset '{spec.name}' is not prepared in {data_dir}: "
                           f"{status.detail}.")
    with _quiet_tfds():
        source = tfds.data_source(spec.tfds_name, split=spec.splits[split],
                                  data_dir=str(data_dir), download=False)
    x, y = read_source(source, spec.stored_shape, fast=False)
    x = np.ascontiguousarray(x[..., : spec.channels])
    return ArrayDataset(spec.name, split, x, y, num_classes=spec.num_classes, mean=spec.mean,
                        std=spec.std, info={"source": f"tfds:{spec.tfds_name}"})


def _external_prepare(spec: ExternalSpec, data_dir: Path, manual_dir: Path | None,
                      download: bool, progress: bool) -> str:
    if _external_status(spec, data_dir).available:
        return f"{spec.name}: already prepared in {data_dir}."
    if not _tensorflow_installed():
        raise DatasetError(f"Cannot prepare {spec.name}: {_external_how(spec, data_dir)}.")
    if not download:
        raise DatasetError(f"{spec.name} must be downloaded once: run "
                           f"'{prepare_command(spec.name, data_dir, download=True)}'.")
    import tensorflow_datasets as tfds

    from vsml_es.data.network import NetworkUnavailable, check_reachable

    with _lock(data_dir, spec.name):
        builder = tfds.builder(spec.tfds_name, data_dir=str(data_dir),
                               file_format="array_record")
        if _is_prepared(builder):
            return f"{spec.name}: already prepared in {data_dir}."
        for url in list(builder.url_infos or {})[:1]:
            try:
                check_reachable(url)
            except NetworkUnavailable as err:
                raise DatasetError(f"Cannot download {spec.name}: {err}. Prepare it on a "
                                   "machine with network access and copy the data dir "
                                   f"'{spec.tfds_name}/' folder into {data_dir}.") from None
        config = tfds.download.DownloadConfig(try_download_gcs=False,
                                              manual_dir=str(manual_dir) if manual_dir else None)
        with _clean_on_failure(data_dir / spec.tfds_name):
            builder.download_and_prepare(download_config=config)
    return f"{spec.name}: prepared in {data_dir}."


for _ext in EXTERNAL_SPECS.values():
    def _bind_external(spec: ExternalSpec) -> None:
        register(
            spec.name, description=spec.title, num_classes=spec.num_classes,
            example_shape=(*spec.stored_shape[:2], spec.channels), splits=tuple(spec.splits),
            source="TFDS ArrayRecord (TFDS's own builder)",
            status=lambda data_dir: _external_status(spec, data_dir),
            prepare=lambda d, m, dl, p: _external_prepare(spec, d, m, dl, p),
        )(lambda split, data_dir: _external_load(spec, split, data_dir))

    _bind_external(_ext)
