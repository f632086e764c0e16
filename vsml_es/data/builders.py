"""TFDS builders for the IDX family, storing ``Tensor(uint8)`` features in ArrayRecord.

Why own builders instead of TFDS's: TFDS's MNIST-family builders encode images with
``tfds.features.Image``, which needs TensorFlow to build. These store the raw pixels as
``Tensor(uint8)`` (byte-encoded), so building and reading need only numpy and ArrayRecord.
They are never registered under TFDS's names (``skip_registration``); they live in the data
dir as ``NAME/1.0.0/`` beside anything TFDS itself may have put there.

The builder never reads or downloads files itself: :mod:`vsml_es.data.fetch` finds and verifies
the sources first and hands over the decoded arrays, so a bad file fails before any build.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from vsml_es.data.sources import IdxSpec
from vsml_es.errors import DatasetError

BUILD_VERSION = "1.0.0"
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images [N,H,W,C], labels [N])


def uint8_stats(images: np.ndarray) -> tuple[float, float]:
    """Exact mean and std of uint8 values from integer sums, in chunks (no big float copy)."""
    flat = images.reshape(len(images), -1)
    total = sq = 0
    for start in range(0, len(flat), 8192):
        chunk = flat[start:start + 8192].astype(np.int64)
        total += int(chunk.sum())
        sq += int(np.einsum("ij,ij->", chunk, chunk))
    n = flat.size
    mean = total / n
    return mean, float(np.sqrt((sq * n - total * total) / (n * n)))


class IdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds one IDX dataset from arrays that were already checksum-verified."""

    SPEC: IdxSpec
    VERSION = tfds.core.Version(BUILD_VERSION)
    RELEASE_NOTES = {BUILD_VERSION: "Tensor(uint8) images in ArrayRecord, from verified IDX files."}
    def __init__(self, *, arrays: Arrays | None = None, progress: bool = False, **kwargs):
        self._arrays = arrays
        self._progress = progress
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        spec = self.SPEC
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{spec.title}. {spec.notes}".strip(),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(
                    shape=spec.image_shape, dtype=np.uint8,
                    encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(spec.class_names)),
            }),
            supervised_keys=("image", "label"),
            homepage=spec.homepage,
            # Keep the published order; it also skips TFDS's shuffle pass (faster builds).
            disable_shuffling=True,
            # Normalization stats of the train split, filled in while building.
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        if self._arrays is None:
            raise DatasetError(
                f"Build '{self.SPEC.name}' through 'vsml-es data prepare {self.SPEC.name}', "
                "which verifies the source files first."
            )
        mean, std = uint8_stats(self._arrays["train"][0])
        self.info.metadata.update({"mean": mean, "std": std, "stats_split": "train"})
        return {split: self._generate_examples(split) for split in self._arrays}

    def _generate_examples(self, split: str):
        images, labels = self._arrays[split]
        bar = tqdm(total=len(labels), desc=f"{self.SPEC.name} {split}", unit="ex",
                   disable=not self._progress, mininterval=0.5)
        with bar:
            for i in range(len(labels)):
                yield i, {"image": images[i], "label": int(labels[i])}
                if i % 1000 == 999 or i == len(labels) - 1:
                    bar.update(i + 1 - bar.n)


_CLASSES: dict[str, type[IdxBuilder]] = {}


def idx_builder_class(spec: IdxSpec) -> type[IdxBuilder]:
    """The builder class of an IDX dataset (one subclass per dataset name, made once)."""
    cls = _CLASSES.get(spec.name)
    if cls is None or cls.SPEC != spec:
        camel = "".join(part.capitalize() for part in spec.name.split("_"))
        cls = type(f"{camel}Idx", (IdxBuilder,), {"name": spec.name, "SPEC": spec},
                   skip_registration=True)
        _CLASSES[spec.name] = cls
    return cls
