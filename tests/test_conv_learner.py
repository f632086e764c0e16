"""A conv VSML learner end to end (issue 13 item 5): config -> image-shaped episodes -> ES ->
meta-test -> exported .vsml file -> online classifier, which sees flat rows as the training
example's image and reproduces the run's meta-test exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import numpy as np

import vsml_es
from vsml_es import cli
from vsml_es.experiment import experiment_from_dict
from vsml_es.metatest import eval_keys
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.tasks import load_task

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
STEPS, EPISODES = 8, 2


def test_conv_learner_trains_exports_and_reproduces_its_metatest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    sets = ["model.conv_layers=[{channels: 2, kernel: 3, stride: 2}]",
            "model.layer_norm=true", "training.population_size=4", "training.eval_chunk=4",
            "task.episode_length=8", "training.generations=2", "logging.progress=false",
            "distributed.workers=0", "metatest.datasets=[digits:test]",
            f"metatest.episodes={EPISODES}", f"metatest.steps={STEPS}",
            "metatest.sgd_tuning_episodes=1", "metatest.sgd_learning_rates=[0.1]",
            "metatest.baselines=[sgd]"]
    args = [a for kv in sets for a in ("--set", kv)]
    assert cli.main(["train", EXPERIMENT, *args, "--run-dir", str(run_dir)]) == 0
    path = tmp_path / "conv.vsml"
    assert cli.main(["export", str(run_dir), "-o", str(path)]) == 0
    params, spec = read_learner_file(path)
    assert spec.example_shape == (8, 8, 1) and spec.model.conv_layers[0].channels == 2
    assert params["lstm_w"].shape == (32, 64)  # the shared LSTM: no size-dependent weights

    clf = vsml_es.load_learner(path)
    config = experiment_from_dict(clf.info["config"])
    task, data = load_task("digits:test", "test", STEPS, 10, True, None, 64,
                           preprocess=config.metatest.preprocess)
    correct = []
    for key in eval_keys(config.metatest.seed, EPISODES):  # the meta-test's own streams
        k_spec, k_learner = jax.random.split(key)
        spec_ = task.episode(k_spec)
        index = np.asarray(spec_.indices)
        X = np.asarray(data.x)[index]
        y = np.asarray(spec_.label_perm)[np.asarray(data.y)[index]]
        clf.reset(random_state=k_learner)
        correct.append(clf.predict_learn(X, y, classes=np.arange(10)) == y)
    with open(run_dir / "metatest" / "curves_digits_test.csv", newline="") as f:
        curve = [float(row["VSML acc"]) for row in csv.DictReader(f)]
    np.testing.assert_allclose(np.mean(correct, axis=0), curve, atol=1e-5)
