"""``vsml-es introspect``: the per-step trace and the accuracy by occurrence of a label, on a
quickstart learner trained here (tiny budget) on scikit-learn's real digits.

The trace is checked against itself (softmax, loss, error messages, occurrence counts
recomputed here from its own columns) and against the meta-test's episode path (same
predictions for the same seed); the occurrence scores against what a fresh permuted label
allows (no better than chance the first time) and what tuned SGD learns (better afterwards).
"""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml_es import cli
from vsml_es.experiment import experiment_from_dict, with_overrides
from vsml_es.introspect import trace_episodes
from vsml_es.learners import build_learner
from vsml_es.metatest import eval_keys, learner_curves, meta_learned
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.storage.params import load_params, save_params
from vsml_es.tasks import load_metatest_task

QUICKSTART = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = ["training.population_size=8", "training.eval_chunk=8", "training.generations=2",
        "task.episode_length=8", "logging.progress=false", "distributed.workers=0",
        "metatest.datasets=[digits:test]"]
STEPS, EPISODES, SEED, CLASSES = 60, 16, 4321, 10


def run(capsys, *argv: object) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, " ".join(capsys.readouterr().err.split())


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.asarray(rows[1:], dtype=np.float64)


@pytest.fixture(scope="module")
def introspected(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("introspect")
    run_dir = root / "run"
    args = [a for kv in TINY for a in ("--set", kv)]
    assert cli.main(["train", QUICKSTART, *args, "--run-dir", str(run_dir),
                     "--no-metatest"]) == 0
    out = root / "out"
    assert cli.main(["introspect", str(run_dir), "--dataset", "digits:test", "--steps",
                     str(STEPS), "--episodes", str(EPISODES), "--seed", str(SEED), "--out",
                     str(out), "--set", "metatest.sgd_tuning_episodes=2"]) == 0
    return run_dir, out


def test_trace_has_one_consistent_row_per_step(introspected):
    _, out = introspected
    header, rows = read_csv(out / "trace.csv")
    col = {name: rows[:, i] for i, name in enumerate(header)}
    assert rows.shape[0] == STEPS and np.array_equal(col["step"], np.arange(1, STEPS + 1))
    unit = {name: np.stack([col[f"{name}_{b}"] for b in range(CLASSES)], axis=1)
            for name in ("logit", "error", "h_rms", "c_rms", "dc_rms")}
    labels = col["label"].astype(int)
    assert np.array_equal(col["prediction"], unit["logit"].argmax(axis=1))
    assert np.array_equal(col["correct"], col["prediction"] == labels)
    probs = np.exp(unit["logit"]) / np.exp(unit["logit"]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(col["p_label"], probs[np.arange(STEPS), labels], rtol=1e-4)
    np.testing.assert_allclose(col["loss"], -np.log(col["p_label"]), rtol=1e-4)
    np.testing.assert_allclose(unit["error"], probs - np.eye(CLASSES)[labels], atol=1e-5)
    seen: dict[int, int] = {}
    for t, y in enumerate(labels):
        seen[y] = seen.get(y, 0) + 1
        assert col["occurrence"][t] == seen[y]
    assert min(unit[n].min() for n in ("h_rms", "c_rms", "dc_rms")) >= 0
    assert unit["dc_rms"].max() > 0  # the output units' states change while learning
    assert len(set(labels)) > 5  # a permuted 10-class stream, not a constant


@pytest.mark.parametrize("masked", [False, True])
def test_trace_predictions_are_the_meta_tests(introspected, masked):
    run_dir, out = introspected
    params, spec = read_learner_file(run_dir / "params.npz")
    extra = ["task.per_dataset_outputs=true", "task.num_classes=12"] if masked else []
    config = with_overrides(experiment_from_dict(spec.info["config"]),
                            ["metatest.datasets=[digits:test]", *extra])
    task, data = load_metatest_task("digits:test", config.task, config.metatest, STEPS,
                                    spec.num_inputs)
    contender = meta_learned(config, {k: jnp.asarray(v) for k, v in params.items()})
    accuracy = learner_curves(contender, task, data, 2, SEED).accuracy
    trace = trace_episodes(contender.params, eval_keys(SEED, 2), data, task, contender.learner)
    logits = np.asarray(trace.logits)
    assert logits.shape == (2, STEPS, 12 if masked else CLASSES)
    if masked:  # outputs beyond the dataset's 10 classes never predict
        assert np.all(np.isneginf(logits[..., CLASSES:]))
    np.testing.assert_array_equal(logits.argmax(-1) == np.asarray(trace.labels), accuracy)
    if not masked:
        header, rows = read_csv(out / "trace.csv")
        np.testing.assert_array_equal(rows[:, header.index("correct")], accuracy[0])


def test_a_label_seen_once_is_learned_by_sgd_and_never_known_before(introspected):
    _, out = introspected
    header, rows = read_csv(out / "occurrence.csv")
    col = {name: rows[:, i] for i, name in enumerate(header)}
    assert np.array_equal(col["k"], np.arange(1, 11))
    for learner in ("vsml", "sgd"):
        first = col[f"{learner}_count"][0]
        assert EPISODES * 8 <= first <= EPISODES * CLASSES  # one per label seen per episode
        assert np.all(np.diff(col[f"{learner}_count"]) <= 0)
        # A freshly permuted label cannot be known before it is shown: chance (0.1) at best.
        assert col[f"{learner}_accuracy"][0] <= 0.1 + 2.5 * np.sqrt(0.09 / first)
    assert col["sgd_accuracy"][2:5].mean() > col["sgd_accuracy"][0] + 0.15
    png = (out / "occurrence.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = (int.from_bytes(png[i:i + 4], "big") for i in (16, 20))
    assert width >= 400 and height >= 300
    assert {p.name for p in out.iterdir()} == {"trace.csv", "occurrence.csv", "occurrence.png",
                                               "tuning.csv"}


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "metatest.steps"),
    (["--episodes", "-1"], "metatest.episodes"),
    (["--seed", "-5"], "seeds are between"),
    (["--dataset", "nope:test"], "Unknown dataset 'nope'"),
    (["--dataset", "digits:validation"], "split"),
    (["--dataset", "fashion_mnist:test"], "is not prepared"),  # an empty data dir, below
])
def test_bad_inputs_exit_2_before_any_output(introspected, tmp_path, capsys, monkeypatch, argv,
                                             message):
    run_dir, _ = introspected
    # Other test files prepare Fashion-MNIST in the session's data dir; this one needs none.
    (tmp_path / "no-data").mkdir()
    monkeypatch.setenv("VSML_ES_DATA_DIR", str(tmp_path / "no-data"))
    out = tmp_path / "never"
    base = {"--dataset": "digits:test"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    code, err = run(capsys, "introspect", run_dir, *[a for kv in base.items() for a in kv],
                    "--out", out)
    assert code == 2 and err.startswith("error:") and message in err, err
    assert not out.exists()


def test_bad_paths_exit_2_and_nothing_of_the_users_is_touched(introspected, tmp_path, capsys):
    run_dir, _ = introspected
    code, err = run(capsys, "introspect", tmp_path / "missing.vsml", "--dataset", "digits")
    assert code == 2 and "does not exist" in err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    code, err = run(capsys, "introspect", empty, "--dataset", "digits")
    assert code == 2 and "has no params.npz" in err and not any(empty.iterdir())
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.md").write_text("mine")
    code, err = run(capsys, "introspect", run_dir, "--dataset", "digits", "--out", mine)
    assert code == 2 and "did not write (todo.md)" in err
    assert [p.name for p in mine.iterdir()] == ["todo.md"]
    a_file = tmp_path / "report.txt"
    a_file.write_text("mine")
    code, err = run(capsys, "introspect", run_dir, "--dataset", "digits", "--out", a_file)
    assert code == 2 and "is a file" in err and a_file.read_text() == "mine"
    params, meta = load_params(run_dir / "params.npz")
    config = experiment_from_dict(meta["config"])
    hebbian = build_learner("hebbian", config).init_params(jax.random.key(0), 64, CLASSES)
    meta["config"]["model"]["learner"] = "hebbian"
    save_params(tmp_path / "hebbian.npz", jax.tree.map(np.asarray, hebbian), meta)
    code, err = run(capsys, "introspect", tmp_path / "hebbian.npz", "--dataset", "digits")
    assert code == 2 and "needs a VSML learner" in err and not (tmp_path / "introspect").exists()
    with pytest.raises(SystemExit) as exit_info:  # --dataset is required (argparse: exit 2)
        cli.main(["introspect", str(run_dir)])
    assert exit_info.value.code == 2
