"""The paper-fidelity data options: label permutation on/off (``task.permute_labels``) and the
official code's fixed normalization constants (``preprocess.normalize: official``).

Expected values are computed here from the raw IDX files with numpy, not through vsml-es.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml_es import cli
from vsml_es.config import MetaTestConfig, PreprocessConfig, TaskConfig
from vsml_es.data import load_dataset, prepare_dataset
from vsml_es.data.sources import FASHION_MNIST
from vsml_es.errors import LearnerError
from vsml_es.tasks import build_task, load_metatest_task, make_task

QUICKSTART = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
DEBIAN_DIR = Path(FASHION_MNIST.system_dirs[0])
# MNIST's mean/std in [0, 1] pixel units, which the official code also applies to Fashion-MNIST.
MNIST_MEAN, MNIST_STD = 0.1306605, 0.3081079


def _idx_images(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h, w)


def _episode_examples(task, data, key: jax.Array,
                      steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and dataset indices of the first ``steps`` examples of an episode."""
    spec = task.episode(key)
    xs, ys = zip(*(task.example(data, spec, jnp.int32(t)) for t in range(steps)), strict=True)
    return np.stack(xs), np.asarray(ys), np.asarray(spec.indices)


@pytest.mark.skipif(not (DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="apt-get install dataset-fashion-mnist")
def test_official_normalize_uses_mnists_constants_on_fashion_mnist(tmp_path):
    prepare_dataset("fashion_mnist", tmp_path)
    dataset = load_dataset("fashion_mnist", "test", tmp_path)
    raw = _idx_images(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").astype(np.float64) / 255.0
    own = _idx_images(DEBIAN_DIR / "train-images-idx3-ubyte.gz").astype(np.float64) / 255.0
    key = jax.random.key(3)
    for mode, mean, std in (("official", MNIST_MEAN, MNIST_STD),
                            ("dataset", own.mean(), own.std())):
        task, data = make_task(dataset, 6, 10, True, PreprocessConfig(normalize=mode))
        x, _, idx = _episode_examples(task, data, key, 6)
        expected = ((raw[idx] - mean) / std).reshape(6, -1)
        np.testing.assert_allclose(x, expected, atol=1e-4)
    # Fashion-MNIST's own statistics differ from MNIST's: the two modes really differ.
    assert abs(own.mean() - MNIST_MEAN) > 0.1


def test_official_normalize_is_refused_for_datasets_without_constants(tmp_path, capsys):
    for key in ("task.preprocess.normalize", "metatest.preprocess.normalize"):
        out = tmp_path / key
        code = cli.main(["train", QUICKSTART, "--set", f"{key}=official", "--set",
                         "metatest.datasets=[digits:test]", "--run-dir", str(out)])
        err = " ".join(capsys.readouterr().err.split())
        assert code == 2 and "no official normalization constants" in err, err
        assert key.split(".")[0] in err and "fashion_mnist" in err and not out.exists()


@pytest.mark.parametrize("permute", [False, True])
def test_permute_labels_applies_to_meta_training_and_meta_test_alike(permute):
    task_cfg = TaskConfig(dataset="digits", episode_length=40, permute_labels=permute)
    training, train_data = build_task(task_cfg)
    test, test_data = load_metatest_task("digits:test", task_cfg, MetaTestConfig(), 40, 64)
    raw_train, raw_test = load_dataset("digits", "train"), load_dataset("digits", "test")
    kept = []
    for seed in range(4):
        key = jax.random.key(seed)
        for task, data, raw in ((training, train_data, raw_train), (test, test_data, raw_test)):
            _, ys, idx = _episode_examples(task, data, key, 40)
            kept.append(bool(np.array_equal(ys, raw.y[idx])))
    assert all(kept) if not permute else not any(kept)


def test_official_constants_reach_a_tasks_statistics():
    cfg = dataclasses.replace(PreprocessConfig(), normalize="official")
    task, _ = make_task(load_dataset("sum", "test"), 5, 2, False, cfg)
    assert (task.mean, task.std) == (0.0, 1.0)  # float data: the constants as published


def test_a_learner_file_of_an_official_run_normalizes_with_its_recorded_constants():
    from vsml_es import vsml
    from vsml_es.classifier import OnlineClassifier
    from vsml_es.config import ModelConfig
    from vsml_es.storage.learner_file import LearnerFile

    params = {k: np.asarray(v) for k, v in vsml.init_params(jax.random.key(1),
                                                           ModelConfig()).items()}
    stats = (("mnist:train", 0.1306605 * 255, 0.3081079 * 255),)

    def spec(mode: str) -> LearnerFile:
        return LearnerFile(ModelConfig(), 16, 3, PreprocessConfig(normalize=mode), stats, {},
                           (4, 4, 1))

    X = np.random.default_rng(0).integers(0, 256, (24, 4, 4, 1)).astype(np.uint8)
    y = np.arange(24) % 3
    def probabilities(mode: str) -> np.ndarray:
        clf = OnlineClassifier(params, spec(mode))
        clf.partial_fit(X, y, classes=[0, 1, 2])
        return clf.predict_proba(X)

    official = probabilities("official")
    np.testing.assert_array_equal(official, probabilities("dataset"))
    assert np.abs(official - probabilities("none")).max() > 1e-4  # the constants reach X
    # Asked for by name, 'official' is no classifier mode: the file may hold other statistics.
    with pytest.raises(LearnerError, match="normalize is 'official'"):
        OnlineClassifier(params, spec("dataset"), normalize="official")
