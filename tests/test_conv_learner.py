"""A conv VSML learner end to end (issue 13 item 5): config -> image-shaped episodes -> ES ->
meta-test -> exported .vsml file -> online classifier, which sees flat rows as the training
example's image and reproduces the run's meta-test exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import metatest_curve, replay_metatest, set_flags

import vsml_es
from vsml_es import cli
from vsml_es.storage.learner_file import read_learner_file

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
STEPS, EPISODES = 8, 2


def test_conv_learner_trains_exports_and_reproduces_its_metatest(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    sets = ["model.conv_layers=[{channels: 2, kernel: 3, stride: 2}]",
            "model.layer_norm=true", "training.population_size=4", "training.eval_chunk=4",
            "task.episode_length=8", "training.generations=2", "logging.progress=false",
            "distributed.workers=0", "metatest.datasets=[digits:test]",
            f"metatest.episodes={EPISODES}", f"metatest.steps={STEPS}",
            "metatest.baselines=[]"]  # VSML's curve is what the learner file must reproduce
    assert cli.main(["train", EXPERIMENT, *set_flags(sets), "--run-dir", str(run_dir)]) == 0
    path = tmp_path / "conv.vsml"
    assert cli.main(["export", str(run_dir), "-o", str(path)]) == 0
    params, spec = read_learner_file(path)
    assert spec.example_shape == (8, 8, 1) and spec.model.conv_layers[0].channels == 2
    assert params["lstm_w"].shape == (32, 64)  # the shared LSTM: no size-dependent weights

    clf = vsml_es.load_learner(path)
    correct = replay_metatest(clf, STEPS, EPISODES)  # flat rows: the training image's shape
    np.testing.assert_allclose(correct.mean(axis=0), metatest_curve(run_dir), atol=1e-5)
