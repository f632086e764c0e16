"""The library API builds its objects once: one meta-training task per command, whatever the
number of learners trained or baselines tuned."""

from __future__ import annotations

from pathlib import Path

from vsml_es import run
from vsml_es.experiment import load_experiment

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def test_train_builds_the_training_task_once(tmp_path, dataset_loads, tiny_overrides):
    seen = dataset_loads
    config = load_experiment(QUICKSTART, [*tiny_overrides, "metatest.baselines=[sgd, adam]"])
    result = run.start_training(config, tmp_path / "run", log=lambda message: None)
    # Meta-training and baseline tuning share one load of the training split; the up-front
    # checks read only the registry, so the meta-test split is loaded once, by the meta-test.
    assert seen.count(("digits", "train")) == 1, seen
    assert seen.count(("digits", "test")) == 1, seen
    assert [row["method"].split(" (lr")[0] for row in result.summaries] == [
        "VSML", "SGD linear", "Adam linear"]


def test_compare_builds_the_training_task_once_for_every_learner(tmp_path, dataset_loads,
                                                                  tiny_overrides):
    seen = dataset_loads
    config = load_experiment(QUICKSTART, [*tiny_overrides, "compare.learners=[vsml, hebbian]",
                                          "metatest.baselines=[sgd]"])
    summaries, timing = run.compare(config, tmp_path / "cmp", log=lambda message: None)
    assert seen.count(("digits", "train")) == 1, seen
    assert not timing["vsml"]["reused"] and not timing["hebbian"]["reused"]
    assert [row["method"].split(" (lr")[0] for row in summaries] == [
        "VSML", "Hebbian (Oja)", "SGD linear"]
