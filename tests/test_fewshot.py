"""Few-shot episodes (task.ways / task.shots; the official omniglot_fewshot dataset): their
structure, that only the query is scored, that a learner which memorises the support beats
chance on the query, and that training, meta-testing and 'vsml-es evaluate' run with them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml_es import run
from vsml_es.cli import main
from vsml_es.config import PreprocessConfig
from vsml_es.data import load_dataset
from vsml_es.episodes import fitness_from_losses, online_episode
from vsml_es.errors import DatasetError
from vsml_es.experiment import load_experiment
from vsml_es.tasks import make_task

WAYS, SHOTS = 5, 2
STEPS = WAYS * SHOTS + 1


def fewshot_digits(permute: bool = False, ways: int = WAYS, shots: int = SHOTS):
    return make_task(load_dataset("digits", "train"), ways * shots + 1, 10, permute,
                     PreprocessConfig(), fewshot=(ways, shots))


def episode_arrays(task, data, seeds: range) -> Iterator[tuple[np.ndarray, np.ndarray,
                                                               np.ndarray]]:
    """(example indices, dataset classes, episode labels) of the episode of each seed (one
    compiled episode function for all: a new jax.jit wrapper compiles anew)."""
    episode = jax.jit(task.episode)
    for seed in seeds:
        spec = episode(jax.random.key(seed))
        idx = np.asarray(spec.indices)
        classes = np.asarray(data.y)[idx]
        yield idx, classes, np.asarray(spec.label_perm)[classes]


@pytest.mark.parametrize("permute", [False, True])
def test_episode_has_ways_times_shots_support_then_a_fresh_query(permute: bool) -> None:
    task, data = fewshot_digits(permute)
    for idx, classes, labels in episode_arrays(task, data, range(12)):
        assert len(idx) == STEPS
        support, query = classes[:-1], classes[-1]
        drawn, counts = np.unique(support, return_counts=True)
        assert len(drawn) == WAYS and (counts == SHOTS).all()  # N ways x K shots
        assert query in drawn  # the query's class was seen ...
        assert idx[-1] not in idx[:-1] and len(set(idx[:-1])) == WAYS * SHOTS  # ... not it
        # One label per class, 0..ways-1; without permutation in order of first appearance
        # (official tf.unique), so the first support step is always label 0.
        first = [labels[list(support).index(c)] for c in dict.fromkeys(support)]
        assert sorted(first) == list(range(WAYS))
        if not permute:
            assert first == list(range(WAYS))
        assert labels[-1] == labels[list(support).index(query)]


def test_episodes_differ_and_query_class_is_uniform() -> None:
    task, data = fewshot_digits()
    positions = [labels[-1] for _, _, labels in episode_arrays(task, data, range(200))]
    counts = np.bincount(positions, minlength=WAYS)
    assert counts.min() > 20  # each of the 5 labels is the query's about 40 times in 200


def memoriser(num_features: int, num_outputs: int):
    """Nearest neighbour over the examples seen so far (uniform before any): a learner that
    memorises the support."""
    capacity = STEPS

    def init(key):
        del key
        return (jnp.zeros((capacity, num_features)), jnp.full((capacity,), -1, jnp.int32),
                jnp.int32(0))

    def step(state, x, y):
        xs, ys, n = state
        dist = jnp.where(ys >= 0, jnp.sum((xs - x) ** 2, axis=1), jnp.inf)
        guess = ys[jnp.argmin(dist)]
        logits = jnp.where(n > 0, 5.0 * jax.nn.one_hot(guess, num_outputs), 0.0)
        return (xs.at[n].set(x), ys.at[n].set(y), n + 1), logits

    return init, step


def blind(num_outputs: int):
    """Ignores everything: always the uniform prediction."""
    return (lambda key: jnp.int32(0)), (lambda s, x, y: (s, jnp.zeros(num_outputs)))


def test_only_the_query_is_scored_and_memorising_beats_chance() -> None:
    task, data = fewshot_digits()
    keys = jax.random.split(jax.random.key(0), 64)

    def losses_of(init, step):
        losses, correct = jax.jit(jax.vmap(lambda k: online_episode(init, step, k, data,
                                                                    task)))(keys)
        return np.asarray(losses), np.asarray(correct)

    mem_loss, mem_correct = losses_of(*memoriser(task.num_features, 10))
    blind_loss, _ = losses_of(*blind(10))
    fit_mem = np.asarray(fitness_from_losses(jnp.asarray(mem_loss), "last_loss"))
    fit_blind = np.asarray(fitness_from_losses(jnp.asarray(blind_loss), "last_loss"))
    np.testing.assert_allclose(fit_mem, mem_loss[:, -1])  # the query alone
    np.testing.assert_allclose(fit_blind, math.log(10), rtol=1e-6)  # chance, 10 outputs
    assert mem_correct[:, -1].mean() > 0.8  # 5-way 2-shot digits by nearest neighbour
    assert fit_mem.mean() < fit_blind.mean() - 1.0
    # The support steps are not scored: the memoriser meets every first appearance at chance
    # (its mean online loss stays high), while its query fitness is far below chance.
    assert mem_loss[:, :-1].mean() > fit_mem.mean() + 1.0


def test_few_shot_layout_errors_are_clear() -> None:
    digits = load_dataset("digits", "train")
    with pytest.raises(DatasetError, match="has 10 classes, too few for task.ways 11"):
        make_task(digits, 12, 12, False, fewshot=(11, 1))
    with pytest.raises(DatasetError, match="fewer than task.shots \\+ 1"):
        make_task(digits, 5 * 500 + 1, 10, False, fewshot=(5, 500))
    with pytest.raises(DatasetError, match="Set task.episode_length and metatest.steps to 6"):
        make_task(digits, 7, 10, False, fewshot=(5, 1))
    task, _ = fewshot_digits()
    with pytest.raises(DatasetError, match=f"{STEPS} steps"):
        task.with_episode_length(20)


FEWSHOT_YAML = """
name: fewshot-toy
model: {backward_pass: true, feed_label: true}
task: {dataset: digits, num_classes: 5, ways: 5, shots: 1, episode_length: 6,
        fitness: last_loss, permute_labels: false}
training: {population_size: 4, generations: 1, eval_chunk: 4}
metatest: {datasets: ['digits:test'], steps: 6, episodes: 4, report_steps: [6],
           baselines: [adam], adam_learning_rates: [0.001], sgd_tuning_episodes: 2}
logging: {progress: false}
distributed: {workers: 0}
"""


@pytest.mark.parametrize(("override", "message"), [
    ("task.episode_length=7", "'task.episode_length' is 7.*set it to 6"),
    ("metatest.steps=200", "'metatest.steps' is 200.*set it to 6"),
    ("task.num_classes=4", "'task.ways' is 5 but the network has task.num_classes = 4"),
    ("task.ways=1", "at least 2 classes"),
    ("task.shots=0", "task.shots"),
    ("task.mixture=[digits, random]", "'task.ways' and 'task.mixture' do not go together"),
])
def test_bad_combinations_exit_2(override: str, message: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "fewshot.yaml"
    path.write_text(FEWSHOT_YAML)
    code = main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--set", override])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert re.search(message, err), err


def test_train_metatest_evaluate_and_backprop_run(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fewshot.yaml"
    path.write_text(FEWSHOT_YAML)
    config = load_experiment(path)
    result = run.train(config, tmp_path / "es", log=lambda message: None)
    assert result.generation == 1 and math.isfinite(result.final_fitness)
    rows = {row["method"].split(" ")[0]: row for row in result.summaries}
    assert set(rows) == {"VSML", "Adam"} and all(r["steps"] == 6 for r in rows.values())
    assert all("acc@6" in r for r in rows.values())
    code = main(["evaluate", str(tmp_path / "es" / "params.npz"), "--episodes", "3",
                 "--out", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err
    code = main(["evaluate", str(tmp_path / "es" / "params.npz"), "--steps", "20",
                 "--out", str(tmp_path / "eval2")])
    assert code == 2 and "set it to 6" in " ".join(capsys.readouterr().err.split())
    backprop = load_experiment(path, ["training.method=backprop", "training.population_size=2"])
    result = run.train(backprop, tmp_path / "bp", metatest=False, log=lambda message: None)
    assert result.generation == 1 and math.isfinite(result.final_fitness)
