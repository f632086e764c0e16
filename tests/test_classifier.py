"""Export a run as a .vsml file, load it as an online classifier, reuse it on new data.

One small real run per module (meta-training + meta-test through the CLI), exported once.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import metatest_curve, replay_metatest, set_flags
from sklearn.datasets import load_iris, load_wine
from sklearn.preprocessing import StandardScaler

import vsml_es
from vsml_es import cli
from vsml_es.classifier import OnlineClassifier
from vsml_es.errors import LearnerError
from vsml_es.experiment import experiment_from_dict
from vsml_es.storage.learner_file import FORMAT_VERSION, LearnerFile
from vsml_es.storage.learner_file import read_learner_file as read_learner
from vsml_es.storage.params import load_params, save_params
from vsml_es.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = str(ROOT / "experiments" / "quickstart.yaml")
STEPS, EPISODES = 24, 4
TRAIN_SET = [
    "training.population_size=8",
    "training.eval_chunk=8",
    "task.episode_length=16",
    "training.generations=6",
    "checkpoint.every=3",
    "logging.progress=false",
    "distributed.workers=0",  # in-process evaluation
    "metatest.datasets=[digits:test]",
    f"metatest.episodes={EPISODES}",
    f"metatest.steps={STEPS}",
    "metatest.sgd_tuning_episodes=2",
    "metatest.sgd_learning_rates=[0.1]",
    "metatest.baselines=[sgd]",
]

# The README's "use a meta-learned learner" example, verbatim (test_readme_example runs it).
README_EXAMPLE = '''\
import numpy as np
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler
import vsml_es

X, y = load_wine(return_X_y=True)         # 13 features, 3 classes: new to the learner
X = StandardScaler().fit_transform(X)     # it was meta-trained on standardized inputs
order = np.random.default_rng(0).permutation(len(y))
X, y = X[order], y[order]
clf = vsml_es.load_learner("quickstart.vsml", normalize="none")
clf.partial_fit(X[:128], y[:128], classes=[0, 1, 2])  # learns in its LSTM states only
print(f"held-out accuracy: {clf.score(X[128:], y[128:]):.2f}")
'''


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("learner") / "run"
    assert cli.main(["train", EXPERIMENT, *set_flags(TRAIN_SET), "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def vsml_file(run_dir: Path) -> Path:
    path = run_dir.parent / "quick.vsml"
    assert cli.main(["export", str(run_dir), "-o", str(path)]) == 0
    return path


def wine() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return StandardScaler().fit_transform(X)[order], y[order]


# --------------------------------------------------------------------------------------------
# The file


def test_export_writes_a_documented_pickle_free_file(vsml_file: Path, run_dir: Path) -> None:
    with np.load(vsml_file, allow_pickle=False) as z:
        names = set(z.files)
        meta = json.loads(z["__meta_json__"].tobytes())
    assert names == {"lstm_w", "lstm_b", "fwd_w", "fwd_b", "bwd_w", "bwd_b", "__meta_json__"}
    assert meta["format"] == "vsml-learner" and meta["format_version"] == FORMAT_VERSION
    assert meta["learner"] == "vsml"
    config = experiment_from_dict(meta["config"])
    assert meta["model"]["state_size"] == config.model.state_size == 16
    assert (meta["num_inputs"], meta["num_outputs"]) == (64, 10)
    assert meta["input"]["preprocess"]["normalize"] == "dataset"
    [stats] = meta["input"]["stats"]
    assert stats["dataset"] == "digits:train" and stats["std"] > 0
    training = meta["training"]
    assert training["datasets"] == ["digits"] and training["generation"] == 6
    assert training["source"] == "checkpoints/gen-000006"
    methods = {row["method"] for row in meta["metatest"]["summary"]}
    assert "VSML" in methods and any(m.startswith("SGD") for m in methods)
    assert set(meta["versions"]) >= {"jax", "evosax", "vsml_es"}
    # Every key of the file is documented.
    doc = (ROOT / "docs" / "vsml-file-format.md").read_text()
    for key in [*meta, *(f"{k}.{sub}" for k in ("input", "training", "metatest")
                         for sub in meta[k])]:
        assert f"`{key}`" in doc, f"docs/vsml-file-format.md does not describe `{key}`"


def test_export_choices_and_errors(run_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", str(run_dir), "--checkpoint", "best",
                     "-o", str(tmp_path / "best.vsml")]) == 0
    assert cli.main(["export", str(run_dir), "--checkpoint", "3",
                     "-o", str(tmp_path / "g3.vsml")]) == 0
    _, meta = load_params(tmp_path / "g3.vsml")
    assert meta["training"]["generation"] == 3
    assert meta["metatest"]["summary"] == []  # the run's meta-test is of generation 6
    assert "not these parameters" in meta["metatest"]["note"]
    capsys.readouterr()
    for argv, message in [
        (["export", str(run_dir), "-o", str(tmp_path / "x.npz")], "must end in .vsml"),
        (["export", str(run_dir), "--checkpoint", "newest"], "use latest, best or a generation"),
        (["export", str(run_dir), "--checkpoint", "4"], "no checkpoint of generation 4"),
        (["export", str(tmp_path / "missing")], "does not exist"),
        (["export", str(tmp_path)], "nothing to export"),
    ]:
        assert cli.main(argv) == 2, argv
        assert message in " ".join(capsys.readouterr().err.split()), argv


# --------------------------------------------------------------------------------------------
# The learner reproduces the run's meta-test, stream for stream


def test_learner_reproduces_the_runs_metatest(vsml_file: Path, run_dir: Path) -> None:
    clf = vsml_es.load_learner(vsml_file)
    correct = replay_metatest(clf, STEPS, EPISODES)
    np.testing.assert_allclose(correct.mean(axis=0), metatest_curve(run_dir), atol=1e-5)
    [row] = [r for r in clf.info["metatest"]["summary"] if r["method"] == "VSML"]
    quarter = STEPS // 4
    assert correct[:, :quarter].mean() == pytest.approx(row["acc_first_quarter"], abs=1e-6)
    assert correct[:, -quarter:].mean() == pytest.approx(row["acc_last_quarter"], abs=1e-6)


def test_evaluate_accepts_a_vsml_file(vsml_file: Path, run_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    code = cli.main(["evaluate", str(vsml_file), "--dataset", "digits:test", "--steps",
                     str(STEPS), "--episodes", str(EPISODES), "--out", str(out)])
    assert code == 0
    assert "digits:test" in capsys.readouterr().out
    assert (out / "curves_digits_test.csv").is_file() and (out / "curves_digits_test.png").is_file()
    with open(out / "summary.csv", newline="") as f:
        evaluated = [r for r in csv.DictReader(f) if r["method"] == "VSML"]
    with open(run_dir / "metatest" / "summary.csv", newline="") as f:
        trained = [r for r in csv.DictReader(f) if r["method"] == "VSML"]
    assert evaluated == trained  # same parameters, same streams, same numbers


# --------------------------------------------------------------------------------------------
# Reuse on new data


def test_new_dataset_with_fewer_features_and_classes(vsml_file: Path) -> None:
    X, y = wine()  # 13 features, 3 classes; the network has 64 inputs and 10 outputs
    names = np.array(["barolo", "grignolino", "barbera"])[y]
    clf = vsml_es.load_learner(vsml_file, normalize="none")
    for start, stop in [(0, 50), (50, 87), (87, 88), (88, 128)]:  # any batch sizes
        clf.partial_fit(X[start:stop], names[start:stop], classes=names)
    assert clf.n_features_in_ == 13 and clf.n_seen_ == 128
    assert clf._pipe.project  # 13 features reach the 64 inputs through a random projection
    assert list(clf.classes_) == ["barbera", "barolo", "grignolino"]
    proba = clf.predict_proba(X[128:])
    assert proba.shape == (50, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    predictions = clf.predict(X[128:])
    assert set(predictions) <= set(names)
    assert clf.score(X[128:], names[128:]) == np.mean(predictions == names[128:])
    # Batching never changes what is learned: one call gives the same state.
    once = vsml_es.load_learner(vsml_file, normalize="none")
    once.partial_fit(X[:128], names[:128], classes=names)
    np.testing.assert_array_equal(once.predict_proba(X[128:]), proba)


def test_other_images_are_resized_and_padding_is_available(vsml_file: Path) -> None:
    # 16x16 images (the digits, upscaled) are resized to the 8x8 the learner was trained on.
    _, spec = read_learner(vsml_file)
    assert spec.example_shape == (8, 8, 1)
    task, data = load_task("digits:test", "test", 8, 10)
    images = np.repeat(np.repeat(np.asarray(data.x[:40]), 2, axis=1), 2, axis=2)
    big = vsml_es.load_learner(vsml_file)  # normalize as in meta-training
    big.partial_fit(images, np.asarray(data.y[:40]), classes=range(10))
    assert big.n_features_in_ == 256 and big.predict(images[:3]).shape == (3,)
    assert big._pipe.preprocess.resize == (8, 8) and not big._pipe.project
    iris_X, iris_y = load_iris(return_X_y=True)
    padded = vsml_es.load_learner(vsml_file, normalize="none", input_map="pad")
    padded.partial_fit(StandardScaler().fit_transform(iris_X), iris_y, classes=[0, 1, 2])
    assert padded._pipe.pad_to == 64 and not padded._pipe.project


def test_learning_happens_only_in_the_lstm_states(vsml_file: Path) -> None:
    X, y = wine()
    stored, _ = read_learner(vsml_file)
    clf = vsml_es.load_learner(vsml_file, normalize="none", random_state=3)
    clf.partial_fit(X[:1], y[:1], classes=[0, 1, 2])
    before = clf.predict_proba(X[100:110])
    clf.partial_fit(X[1:100], y[1:100])
    after = clf.predict_proba(X[100:110])
    assert not np.array_equal(before, after)  # it learned ...
    for name, value in stored.items():  # ... and its meta-parameters are unchanged
        np.testing.assert_array_equal(np.asarray(clf.params[name]), value)
    again = clf.reset().partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    np.testing.assert_array_equal(again.predict_proba(X[100:110]), after)  # deterministic
    other = clf.reset(random_state=4).partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    assert not np.array_equal(other.predict_proba(X[100:110]), after)  # new initial weights


def test_a_runs_params_npz_loads_as_the_same_learner(vsml_file: Path, run_dir: Path) -> None:
    X, y = wine()
    a = vsml_es.load_learner(vsml_file, normalize="none").partial_fit(X[:64], y[:64], [0, 1, 2])
    b = vsml_es.load_learner(run_dir / "params.npz", normalize="none")
    b.partial_fit(X[:64], y[:64], [0, 1, 2])
    np.testing.assert_array_equal(a.predict_proba(X[64:]), b.predict_proba(X[64:]))
    assert "64 inputs -> 10 outputs" in repr(a)


def test_readme_example_runs_as_written(vsml_file: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example, and any README python block that calls load_learner."""
    readme = (ROOT / "README.md").read_text() if (ROOT / "README.md").is_file() else ""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "load_learner" in b]
    (tmp_path / "quickstart.vsml").write_bytes(vsml_file.read_bytes())
    monkeypatch.chdir(tmp_path)
    for code in [README_EXAMPLE, *blocks]:
        exec(compile(code, "README example", "exec"), {})
        assert re.search(r"held-out accuracy: \d\.\d\d", capsys.readouterr().out)


# --------------------------------------------------------------------------------------------
# Every error says what is wrong and how to fix it


def test_learner_input_errors(vsml_file: Path) -> None:
    X, y = wine()
    fresh = lambda **kw: vsml_es.load_learner(vsml_file, normalize="none", **kw)  # noqa: E731
    fitted = fresh().partial_fit(X[:10], y[:10], classes=[0, 1, 2])
    cases = [
        (lambda: fresh().partial_fit(X[:5], y[:5]), "first partial_fit call needs classes="),
        (lambda: fresh().partial_fit(X[:5], y[:5], classes=range(11)),
         "at most 10 classes; got 11. Use a learner meta-trained with task.num_classes >= 11"),
        (lambda: fresh().partial_fit(X[:5], np.zeros(5), classes=[0]), "at least 2 classes"),
        (lambda: fresh().partial_fit(X[:5], [0, 1, 2, 7, 9], classes=[0, 1, 2]),
         "label(s) [7, 9] that are not in classes [0, 1, 2]"),
        (lambda: fitted.partial_fit(X[:5], y[:5], classes=[0, 1, 2, 3]),
         "differs from the classes this learner is learning ([0, 1, 2]); call reset()"),
        (lambda: fresh().partial_fit(X[0], y[:1], classes=[0, 1, 2]),
         "for one example use X.reshape(1, -1)"),
        (lambda: fresh().partial_fit(np.full((2, 13), np.nan), [0, 1], classes=[0, 1]),
         "X contains NaN or infinity"),
        (lambda: fresh().partial_fit([["a", "b"]], [0], classes=[0, 1]),
         "X must hold real numbers"),
        (lambda: fresh().partial_fit(X[:5], y[:4], classes=[0, 1, 2]),
         "y must be 1-D with one label per row of X (5)"),
        (lambda: fitted.partial_fit(X[:5, :12], y[:5]),
         "learning with shape (13,); call reset() to start over"),
        (lambda: fitted.predict(X[:5, :12]), "learning with shape (13,)"),
        (lambda: fresh().predict(X[:5]), "has not learned anything yet: call partial_fit"),
        (lambda: fresh(input_map="exact").partial_fit(X[:5], y[:5], classes=[0, 1, 2]),
         "X has 13 features but the network has 64 inputs and input_map='exact'"),
        (lambda: fresh(input_map="pad").partial_fit(np.zeros((2, 70)), [0, 1], classes=[0, 1]),
         "more than the network's 64 inputs; zero-padding cannot drop features: use "
         "input_map='project'"),
        (lambda: fresh(input_map="bilinear"), "input_map is 'bilinear'; valid: auto, exact, pad"),
        (lambda: fresh(input_map="resize").partial_fit(X[:5], y[:5], classes=[0, 1, 2]),
         "input_map='resize' needs images [n_samples, height, width, channels] with the "
         "meta-training images' 1 channel(s) (their shape: [8, 8, 1]); X has examples of shape "
         "(13,)"),
        (lambda: vsml_es.load_learner(vsml_file, normalize="minmax"),
         "normalize is 'minmax'; valid: dataset, example, none"),
        (lambda: fresh(random_state="seven"), "random_state must be an int seed or a JAX key"),
        (lambda: fitted.score(X[:5], y[:4]), "y has shape (4,) but X has 5 rows"),
    ]
    for call, message in cases:
        with pytest.raises(LearnerError) as err:
            call()
        assert message in str(err.value)
        assert isinstance(err.value, ValueError)  # sklearn-style callers catch ValueError
    # A rejected first call leaves nothing behind: the corrected call may use other data.
    clf = fresh()
    with pytest.raises(LearnerError):
        clf.partial_fit(X[:5], y[:5])
    clf.partial_fit(X[:5, :4], y[:5], classes=[0, 1, 2])
    assert clf.n_features_in_ == 4


def test_dataset_normalize_needs_one_training_dataset(vsml_file: Path) -> None:
    params, spec = read_learner(vsml_file)
    mixture = LearnerFile(spec.model, spec.num_inputs, spec.num_outputs, spec.preprocess,
                          (("digits:train", 1.0, 2.0), ("mnist1d:train", 0.0, 1.0)), spec.info)
    with pytest.raises(LearnerError, match="normalize='dataset' needs the statistics of one"):
        OnlineClassifier(params, mixture)
    OnlineClassifier(params, mixture, normalize="example")  # needs no statistics


def test_learner_file_errors(vsml_file: Path, tmp_path: Path) -> None:
    params, meta = load_params(vsml_file)
    newer = tmp_path / "newer.vsml"
    save_params(newer, params, {**meta, "format_version": FORMAT_VERSION + 1})
    tampered = tmp_path / "tampered.vsml"
    save_params(tampered, {**params, "lstm_b": params["lstm_b"] + 1}, meta)
    reshaped = tmp_path / "reshaped.vsml"
    bad = {**params, "lstm_b": np.zeros(3, np.float32)}
    from vsml_es.storage.learner_file import params_sha256

    save_params(reshaped, bad, {**meta, "params_sha256": params_sha256(bad)})
    other = tmp_path / "other.vsml"
    save_params(other, params, {"format": "something-else"})
    text = tmp_path / "text.vsml"
    text.write_text("not a zip")
    truncated = tmp_path / "truncated.vsml"
    truncated.write_bytes(vsml_file.read_bytes()[: vsml_file.stat().st_size // 2])
    cases = [
        (tmp_path / "missing.vsml", "does not exist"),
        (text, "is not a vsml-es parameter file"),
        (truncated, "or it is truncated or corrupt"),
        (newer, f"format version {FORMAT_VERSION + 1}; this vsml-es reads versions up to "
                f"{FORMAT_VERSION}. Upgrade vsml-es"),
        (tampered, "is corrupt: its parameters do not match their SHA-256"),
        (reshaped, "but its model config needs"),
        (other, "is not a vsml-es learner file (format 'something-else'); export one with"),
    ]
    for path, message in cases:
        with pytest.raises(Exception) as err:
            vsml_es.load_learner(path)
        assert isinstance(err.value, cli.UserError)  # the CLI prints it, exit code 2
        assert message in str(err.value), (path, str(err.value))


def test_scikit_learn_conventions(vsml_file: Path) -> None:
    """clone, get/set_params, a Pipeline and cross_val_score, as with any sklearn classifier."""
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = wine()
    clf = vsml_es.load_learner(vsml_file, normalize="none", random_state=3)
    assert is_classifier(clf)
    params = clf.get_params()
    assert params["normalize"] == "none" and params["random_state"] == 3
    twin = clone(clf)  # sklearn checks that the constructor keeps every argument as given
    assert twin is not clf and twin.get_params()["random_state"] == 3
    assert twin.set_params(random_state=4).random_state == 4 and twin.classes_ is None

    pipe = make_pipeline(StandardScaler(), clone(clf))
    pipe.fit(X[:120], y[:120])
    direct = clone(clf).fit(StandardScaler().fit(X[:120]).transform(X[:120]), y[:120])
    scaled = StandardScaler().fit(X[:120]).transform(X[120:])
    np.testing.assert_array_equal(pipe.predict(X[120:]), direct.predict(scaled))
    assert pipe.score(X[120:], y[120:]) == direct.score(scaled, y[120:])

    folds = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(make_pipeline(StandardScaler(), clf), X, y, cv=folds)
    by_hand = [make_pipeline(StandardScaler(), clone(clf)).fit(X[a], y[a]).score(X[b], y[b])
               for a, b in folds.split(X)]
    np.testing.assert_allclose(scores, by_hand)  # every fold starts from a fresh learner
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))
    with pytest.raises(LearnerError, match="normalize"):
        clone(clf).set_params(normalize="zscore")
