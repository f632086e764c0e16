"""Meta-training by imitation of an optimizer, warm starts, and meta-testing at a dataset's own
input size: real runs at toy size."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vsml_es import run
from vsml_es.episodes import learner_episode
from vsml_es.errors import ConfigError, DatasetError
from vsml_es.experiment import load_experiment
from vsml_es.imitation import build_imitation, imitation_episode, imitation_target
from vsml_es.learners import build_learner
from vsml_es.learners.gradient import GradientLearner
from vsml_es.storage.params import load_params
from vsml_es.tasks import build_task
from vsml_es.trainer import Trainer

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
IMITATION = ["training.method=imitation", "training.population_size=4",
             "training.learning_rate=0.02", "training.imitation_learning_rate=8",
             "task.episode_length=16"]

# Deep imitation (paper section 4.1, deep case): VSML with one hidden layer of 8 imitates online
# SGD on the sgd_mlp baseline's MLP of the same width.
DEEP = ["training.imitation_target=sgd_mlp", "model.hidden_layers=[8]", "metatest.mlp_hidden=8"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_imitation_loss_is_zero_for_the_imitated_optimizer_itself():
    config = load_experiment(QUICKSTART, ["task.episode_length=12"])
    task, data = build_task(config.task)
    sgd = GradientLearner("sgd")
    lr = {"learning_rate": np.float32(0.1)}
    loss, _ = imitation_episode(sgd, lr, sgd, lr, jax.random.key(3), data, task)
    assert float(loss) == 0.0
    vsml = build_learner("vsml", config)
    params = vsml.init_params(jax.random.key(0), task.num_features, task.num_outputs)
    loss, _ = imitation_episode(vsml, params, sgd, lr, jax.random.key(3), data, task)
    assert float(loss) > 0.01  # random VSML does not already behave like SGD


def test_decaying_target_is_sgd_with_rate_lr_over_sqrt_of_1_plus_t_over_tau():
    """Written out in NumPy: a linear model from zero, step t (from 0) at lr / sqrt(1 + t/tau),
    each prediction made before its own update."""
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(30, 5)).astype(np.float32), rng.integers(0, 3, 30)
    lr, tau = 0.5, 4.0
    target = imitation_target("sgd", build_learner("vsml", load_experiment(QUICKSTART)), tau)
    init, step = target.make({"learning_rate": np.float32(lr)}, 5, 3)
    state = init(jax.random.key(0))
    w, b = np.zeros((5, 3)), np.zeros(3)
    for t, (x, y) in enumerate(zip(xs, ys, strict=True)):
        state, logits = step(state, x, y)
        expected = x @ w + b
        np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)
        p = np.exp(expected - expected.max())
        err = p / p.sum() - np.eye(3)[y]
        rate = lr / np.sqrt(1 + t / tau)
        w, b = w - rate * np.outer(x, err), b - rate * err
    assert "decay 4" in target.describe({"learning_rate": np.float32(lr)})


@pytest.mark.parametrize("kind", ["logits", "kl"])
def test_mlp_target_is_the_mlp_baseline_and_imitating_itself_costs_nothing(kind):
    config = load_experiment(QUICKSTART, ["task.episode_length=12", "training.method=imitation",
                                          *DEEP])
    task, data = build_task(config.task)
    vsml = build_learner("vsml", config)
    target = imitation_target("sgd_mlp", vsml)
    assert target == build_learner("sgd_mlp", config) == GradientLearner("sgd", 8)
    lr = {"learning_rate": np.float32(0.1)}
    loss, _ = imitation_episode(target, lr, target, lr, jax.random.key(3), data, task, kind)
    assert float(loss) == 0.0
    # ... but not the linear SGD: the hidden layer changes what the MLP predicts.
    linear, _ = imitation_episode(GradientLearner("sgd"), lr, target, lr, jax.random.key(3),
                                  data, task, kind)
    assert float(linear) > 1e-4
    params = vsml.init_params(jax.random.key(0), task.num_features, task.num_outputs)
    loss, _ = imitation_episode(vsml, params, target, lr, jax.random.key(3), data, task, kind)
    assert float(loss) > 1e-3  # random deep VSML does not already behave like the MLP


@pytest.mark.parametrize("kind", ["logits", "kl"])
def test_task_weight_adds_the_learners_own_online_cross_entropy(kind):
    """With the imitation term zero (the optimizer imitating itself), what is left is exactly
    the weighted mean online loss that ES would score the same stream with."""
    config = load_experiment(QUICKSTART, ["task.episode_length=12"])
    task, data = build_task(config.task)
    sgd = GradientLearner("sgd")
    lr = {"learning_rate": np.float32(0.1)}
    key = jax.random.key(3)
    loss, _ = imitation_episode(sgd, lr, sgd, lr, key, data, task, kind, task_weight=2.5)
    online, _ = learner_episode(sgd, lr, key, data, task)
    assert float(online.mean()) > 0.5  # a fresh linear model is far from certain
    np.testing.assert_allclose(float(loss), 2.5 * float(online.mean()), rtol=1e-5)


def test_imitation_training_lowers_the_imitation_loss(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION,
                                          "training.generations=60", "logging.log_every=1"])
    run.start_training(config, tmp_path / "run", metatest=False, log=lambda message: None)
    losses = [row["fitness_mean"] for row in _metrics(tmp_path / "run")]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses


def test_deep_imitation_training_lowers_the_imitation_loss(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION, *DEEP,
                                          "training.generations=40", "logging.log_every=1"])
    run.start_training(config, tmp_path / "run", metatest=False, log=lambda message: None)
    losses = [row["fitness_mean"] for row in _metrics(tmp_path / "run")]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses


@pytest.mark.parametrize("horizon,target", [
    (0, []), (48, [*DEEP, "training.imitation_decay_steps=10"])])
def test_imitation_resumes_bit_exactly(tmp_path, tiny_overrides, horizon, target):
    """Carried episodes (horizon 48 = 3 unrolls of 16) are part of the checkpoint too, the
    MLP target's weights and optimizer state among them, its decaying rate's step count too
    (the carry is one pytree whatever the target: the linear target's is the MLP's without the
    hidden layer, so one case serves)."""
    overrides = [*tiny_overrides, *IMITATION, *target, f"training.imitation_horizon={horizon}",
                 "training.generations=6", "checkpoint.every=3"]
    config = load_experiment(QUICKSTART, overrides)
    straight = Trainer(config, tmp_path / "straight")
    straight.run()
    first = Trainer(load_experiment(QUICKSTART, [*overrides[:-2], "training.generations=3",
                                                 "checkpoint.every=3"]), tmp_path / "split")
    first.run()
    resumed = run.resume_training(tmp_path / "split", overrides=["training.generations=6"],
                                  metatest=False, log=lambda message: None)
    assert resumed.generation == 6
    a, _ = load_params(tmp_path / "straight" / "params.npz")
    b, _ = load_params(tmp_path / "split" / "params.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert [r["fitness_mean"] for r in _metrics(tmp_path / "straight")] == [
        r["fitness_mean"] for r in _metrics(tmp_path / "split")]


def test_es_starts_from_init_params(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION, "training.generations=2"])
    run.start_training(config, tmp_path / "imitated", metatest=False, log=lambda message: None)
    source = tmp_path / "imitated" / "params.npz"
    warm = load_experiment(QUICKSTART, [*tiny_overrides, f"training.init_params={source}"])
    trainer = Trainer(warm, tmp_path / "warm")
    start = trainer.mean_params(trainer.initial_state())
    saved, _ = load_params(source)
    for key, value in saved.items():
        np.testing.assert_array_equal(np.asarray(start[key]), value)

    # The warm start is history once the run exists: with its source file gone, the run still
    # resumes, and its learner file still meta-tests (the shipped learners name files of the
    # machine they were trained on).
    run.start_training(warm, tmp_path / "warm-run", metatest=False, log=lambda message: None)
    source.unlink()
    resumed = run.resume_training(tmp_path / "warm-run", overrides=["training.generations=4"],
                                  metatest=False, log=lambda message: None)
    assert resumed.generation == 4
    rows, _ = run.evaluate_file(tmp_path / "warm-run" / "params.npz", steps=12, episodes=2,
                                overrides=["metatest.baselines=[]"], out=tmp_path / "eval")
    assert 0.0 <= rows[0]["acc@10"] <= 1.0


def test_bad_method_settings_fail_before_work(tmp_path, tiny_overrides):
    # Gradient methods shard their episodes over Ray workers like any method.
    load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION, "distributed.workers=2"])
    with pytest.raises(ConfigError, match="no file"):
        load_experiment(QUICKSTART, [*tiny_overrides, "training.init_params=/nonexistent.vsml"])
    with pytest.raises(ConfigError, match="valid values: es, nres, pes, imitation, backprop"):
        load_experiment(QUICKSTART, [*tiny_overrides, "training.method=bptt"])
    with pytest.raises(ConfigError, match="gradient_clip' must be >= 0"):
        load_experiment(QUICKSTART, [*tiny_overrides, "training.gradient_clip=-1"])
    with pytest.raises(ConfigError, match="'backprop' trains VSML"):
        load_experiment(QUICKSTART, [*tiny_overrides, "training.method=backprop",
                                     "model.learner=hebbian"])
    with pytest.raises(ConfigError, match="multiple of task.episode_length"):
        load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION, "training.imitation_horizon=40"])
    with pytest.raises(ConfigError, match="imitation_task_weight' must be >= 0"):
        load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION,
                                     "training.imitation_task_weight=-1"])
    with pytest.raises(ConfigError, match="imitation_decay_steps' must be >= 0"):
        load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION,
                                     "training.imitation_decay_steps=-5"])
    # A learner file of another model size is refused, naming the mismatch.
    small = load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION, "training.generations=1",
                                         "model.state_size=8"])
    run.start_training(small, tmp_path / "small", metatest=False, log=lambda message: None)
    with pytest.raises(ConfigError, match="another shape"):
        load_experiment(QUICKSTART, [*tiny_overrides,
                                     f"training.init_params={tmp_path / 'small' / 'params.npz'}"])
    task, _ = build_task(small.task)
    assert build_imitation(small.training, build_learner("vsml", small),
                           task).target_learning_rate == 8 / 64


def test_mlp_target_needs_vsml_with_the_same_hidden_layer(tiny_overrides):
    """Before any work: the MLP target is the sgd_mlp/adam_mlp baseline (metatest.mlp_hidden
    wide), so VSML must have exactly that one hidden layer; ES runs ignore the key."""
    base = [*tiny_overrides, *IMITATION]
    for target in ("sgd_mlp", "adam_mlp"):
        for hidden, width in (("[]", 160), ("[8]", 160), ("[8, 8]", 8), ("[16]", 8)):
            with pytest.raises(ConfigError, match=rf"hidden_layers: \[{width}\]"):
                load_experiment(QUICKSTART, [*base, f"training.imitation_target={target}",
                                             f"model.hidden_layers={hidden}",
                                             f"metatest.mlp_hidden={width}"])
        load_experiment(QUICKSTART, [*base, f"training.imitation_target={target}",
                                     "model.hidden_layers=[8]", "metatest.mlp_hidden=8"])
    with pytest.raises(ConfigError, match="valid values: sgd, adam, sgd_mlp, adam_mlp"):
        load_experiment(QUICKSTART, [*base, "training.imitation_target=rmsprop_mlp"])
    load_experiment(QUICKSTART, [*tiny_overrides, "training.imitation_target=sgd_mlp"])  # es
    # A deep VSML may still imitate a linear optimizer (as before this target existed).
    load_experiment(QUICKSTART, [*base, "model.hidden_layers=[8]"])
    proc = subprocess.run(
        [sys.executable, "-m", "vsml_es.cli", "config", str(QUICKSTART), "--set",
         "training.method=imitation", "--set", "training.imitation_target=sgd_mlp"],
        capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "model.hidden_layers: [160]" in proc.stderr


def test_metatest_at_a_datasets_own_size(tmp_path, tiny_overrides):
    """VSML and SGD run at 16x16 = 256 inputs after meta-training at 64; SGD is tuned on the
    meta-training streams resampled to 16x16, never on the test."""
    config = load_experiment(QUICKSTART, [*tiny_overrides,
                                          "metatest.datasets=[digits:test, digits:test@16x16]"])
    result = run.start_training(config, tmp_path / "run", log=lambda message: None)
    rows = {(r["dataset"], r["method"].split(" (")[0]) for r in result.summaries}
    assert rows == {("digits:test", "VSML"), ("digits:test", "SGD linear"),
                    ("digits:test@16x16", "VSML"), ("digits:test@16x16", "SGD linear")}
    with open(tmp_path / "run" / "metatest" / "tuning.csv") as f:
        tuned = {row["baseline"] for row in csv.DictReader(f)}
    assert tuned == {"sgd", "sgd@16x16"}


def test_own_size_needs_size_free_learners_and_a_valid_size(tmp_path, tiny_overrides):
    with pytest.raises(DatasetError, match="depend on the input size"):
        config = load_experiment(QUICKSTART, [*tiny_overrides, "model.learner=hebbian",
                                              "metatest.datasets=[digits:test@16x16]"])
        run.start_training(config, tmp_path / "run", log=lambda message: None)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    for bad in ("digits:test@16", "digits:test@0x8", "digits:test@axb"):
        with pytest.raises(DatasetError, match="HEIGHTxWIDTH"):
            load_experiment(QUICKSTART, [*tiny_overrides, f"metatest.datasets=[{bad}]"])


def test_cli_exit_code_for_a_bad_size(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vsml_es.cli", "config", str(QUICKSTART), "--set",
         "metatest.datasets=[digits:test@big]"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "HEIGHTxWIDTH" in proc.stderr


def test_compare_skips_size_bound_learners_at_another_size(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [
        *tiny_overrides, "compare.learners=[vsml, hebbian]",
        "metatest.datasets=[digits:test, digits:test@12x12]"])
    messages: list[str] = []
    summaries, _ = run.compare(config, tmp_path / "cmp", log=messages.append)
    methods = {}
    for row in summaries:
        methods.setdefault(row["dataset"], []).append(row["method"].split(" (")[0])
    assert methods == {"digits:test": ["VSML", "Hebbian", "SGD linear"],
                       "digits:test@12x12": ["VSML", "SGD linear"]}, methods


def test_carried_episodes_are_staggered_and_restart_at_the_horizon(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION,
                                          "training.imitation_horizon=64"])  # 4 unrolls of 16
    trainer = Trainer(config, tmp_path / "run")
    state = trainer.initial_state()
    assert np.asarray(state.es_state["episodes"].t).tolist() == [0, 16, 32, 48]
    state, _ = trainer.step(state)
    assert np.asarray(state.es_state["episodes"].t).tolist() == [16, 32, 48, 64]
    keys_before = jax.random.key_data(state.es_state["episodes"].key)
    state, _ = trainer.step(state)
    # The fourth stream reached the horizon: it restarted on a new stream, the others carry on.
    assert np.asarray(state.es_state["episodes"].t).tolist() == [32, 48, 64, 16]
    keys_after = jax.random.key_data(state.es_state["episodes"].key)
    np.testing.assert_array_equal(keys_before[:3], keys_after[:3])
    assert not np.array_equal(keys_before[3], keys_after[3])


def test_compare_refuses_imitation_for_other_learners_before_work(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [*tiny_overrides, *IMITATION,
                                          "compare.learners=[vsml, hebbian]"])
    with pytest.raises(ConfigError, match="imitation' trains VSML"):
        run.compare(config, tmp_path / "cmp", log=lambda message: None)
    assert not (tmp_path / "cmp" / "train_vsml").exists()


def test_backprop_meta_loss_is_the_online_loss_es_scores():
    """training.method backprop (official configs/backprop.yaml): no target; the meta-loss
    of an episode is the learner's own online cross-entropy reduced as task.fitness."""
    config = load_experiment(QUICKSTART, ["task.episode_length=12", "training.method=backprop"])
    task, data = build_task(config.task)
    vsml = build_learner("vsml", config)
    params = vsml.init_params(jax.random.key(0), task.num_features, task.num_outputs)
    key = jax.random.key(3)
    online, correct = learner_episode(vsml, params, key, data, task)
    for fitness, want in (("mean_loss", online.mean()), ("last_loss", online[-1])):
        loss, acc = imitation_episode(vsml, params, None, {}, key, data, task, task_weight=1.0,
                                      fitness=fitness)
        np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
        np.testing.assert_allclose(float(acc), float(correct.mean()), rtol=1e-6)
    method = build_imitation(config.training, vsml, task, "last_loss")
    assert (method.target, method.task_weight, method.fitness) == (None, 1.0, "last_loss")


def test_backprop_training_lowers_the_online_loss(tmp_path, tiny_overrides):
    config = load_experiment(QUICKSTART, [*tiny_overrides, "training.method=backprop",
                                          "training.population_size=4",
                                          "training.learning_rate=0.01",
                                          "training.gradient_clip=25", "task.episode_length=16",
                                          "training.generations=12"])
    result = run.train(config, tmp_path / "run", metatest=False, log=lambda message: None)
    rows = _metrics(tmp_path / "run")
    assert result.generation == 12 and len(rows) == 12
    first, last = np.mean([r["fitness_mean"] for r in rows[:3]]), np.mean(
        [r["fitness_mean"] for r in rows[-3:]])
    assert last < first, (first, last)
