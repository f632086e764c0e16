"""ES meta-training: determinism, common random numbers, sharding-independence, NaN handling."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from vsml_es.cli import main
from vsml_es.es import pair_rank_fitness_shaping_fn, sanitize_fitness
from vsml_es.evaluator import Evaluation, LocalEvaluator, build_eval_spec, slice_members
from vsml_es.experiment import load_experiment
from vsml_es.trainer import Trainer

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def population(trainer: Trainer, generation: int = 0):
    state = trainer.initial_state()
    es = trainer.method.strategy
    key = jax.random.fold_in(trainer.method._root, generation)
    pop, _ = es.algorithm.ask(key, state.es_state, es.params)
    return jax.tree.map(np.asarray, pop)


def test_same_seed_same_fitness_bit_for_bit(tiny_overrides, tmp_path):
    config = load_experiment(QUICKSTART, tiny_overrides)
    a = Trainer(config, tmp_path / "a")
    b = Trainer(config, tmp_path / "b")
    pop = population(a)
    assert jax.tree.all(jax.tree.map(np.array_equal, pop, population(b)))
    fa = a.evaluator.evaluate(pop, 3, a.method.episode_ids).fitness
    fb = b.evaluator.evaluate(pop, 3, b.method.episode_ids).fitness
    np.testing.assert_array_equal(fa, fb)
    # another generation means other episodes
    fc = a.evaluator.evaluate(pop, 4, a.method.episode_ids).fitness
    assert not np.array_equal(fa, fc)


def test_antithetic_pairs_share_episode_data(tiny_overrides, tmp_path):
    config = load_experiment(QUICKSTART, tiny_overrides)
    trainer = Trainer(config, tmp_path)
    assert trainer.method.strategy.mirrored
    p = config.training.population_size
    ids = trainer.method.episode_ids
    np.testing.assert_array_equal(ids[: p // 2], ids[p // 2 :])
    pop = population(trainer)
    # Give both members of pair 1 the same parameters: with shared data, identical fitness.
    same = jax.tree.map(lambda a: a.copy(), pop)
    for leaf in jax.tree.leaves(same):
        leaf[1 + p // 2] = leaf[1]
        leaf[2] = leaf[1]
    fitness = trainer.evaluator.evaluate(same, 0, trainer.method.episode_ids).fitness
    assert fitness[1] == fitness[1 + p // 2]
    assert fitness[1] != fitness[2]  # same parameters, other episode: other fitness


def test_fitness_independent_of_sharding(tiny_overrides, tmp_path):
    config = load_experiment(QUICKSTART, tiny_overrides)
    spec, data = build_eval_spec(config)
    evaluator = LocalEvaluator(spec, data)
    trainer = Trainer(config, tmp_path, spec=spec, data=data)
    pop, ids = population(trainer, 2), trainer.method.episode_ids
    whole = evaluator.evaluate(pop, 2, ids).fitness
    for shards in ([[0, 4], [1, 5, 2, 6, 3, 7]], [[i, i + 4] for i in range(4)], [[3, 7, 0]]):
        for index in shards:
            index = np.asarray(index)
            part = evaluator.evaluate(slice_members(pop, index), 2, ids[index]).fitness
            np.testing.assert_array_equal(part, whole[index])


def test_nan_fitness_counted_as_worst():
    fitness, count = sanitize_fitness(np.array([1.0, np.nan, 3.0, np.inf, 2.0]))
    assert count == 2
    np.testing.assert_array_equal(fitness, [1.0, 3.0, 3.0, 3.0, 2.0])
    all_bad, count = sanitize_fitness(np.array([np.nan, np.nan]))
    assert count == 2 and np.isfinite(all_bad).all()


class NaNInjectingEvaluator(LocalEvaluator):
    """A real evaluator whose member 0 diverges, as a blown-up learner would."""

    def evaluate(self, population, generation, episode_ids) -> Evaluation:
        result = super().evaluate(population, generation, episode_ids)
        fitness = result.fitness.copy()
        fitness[0] = np.nan
        return Evaluation(fitness, result.accuracy)


def test_training_survives_nan_fitness(tiny_overrides, tmp_path, capsys):
    config = load_experiment(QUICKSTART, tiny_overrides)
    spec, data = build_eval_spec(config)
    trainer = Trainer(config, tmp_path, evaluator=NaNInjectingEvaluator(spec, data))
    state = trainer.run(progress=False)
    assert state.generation == config.training.generations
    mean = jax.flatten_util.ravel_pytree(trainer.mean_params(state))[0]
    assert np.isfinite(np.asarray(mean)).all()
    assert "NaN/inf fitness" in capsys.readouterr().err
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite"] for r in rows] == [1] * config.training.generations


def test_end_to_end_train_and_evaluate(tiny_overrides, tmp_path, capsys):
    run_dir = tmp_path / "run"
    overrides = [arg for o in tiny_overrides for arg in ("--set", o)]
    assert main(["train", str(QUICKSTART), "--run-dir", str(run_dir), *overrides]) == 0
    out = capsys.readouterr().out
    assert "VSML" in out and "SGD linear" in out and "acc first 25%" in out
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert all(np.isfinite(r["fitness_mean"]) for r in rows)
    assert (run_dir / "metrics.csv").read_text().count("\n") == 4
    assert (run_dir / "config.yaml").exists() and (run_dir / "params.npz").exists()
    for name in ("summary.csv", "curves_digits_test.csv", "curves_digits_test.png"):
        assert (run_dir / "metatest" / name).stat().st_size > 0
    curves = (run_dir / "metatest" / "curves_digits_test.csv").read_text().splitlines()
    assert len(curves) == 1 + 12  # header + one row per inner step
    # evaluate the saved parameters on another number of steps
    assert main(["evaluate", str(run_dir / "params.npz"), "--steps", "6", "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "over 3 episodes of 6 online steps" in " ".join(out.split())


def test_evaluate_rejects_non_parameter_file(tmp_path, capsys):
    bogus = tmp_path / "x.npz"
    bogus.write_bytes(b"not an npz")
    assert main(["evaluate", str(bogus)]) == 2
    assert "not a vsml-es parameter file" in " ".join(capsys.readouterr().err.split())


def test_pair_rank_shaping_cancels_episode_difficulty():
    rng = np.random.default_rng(0)
    half = 8
    diff = rng.normal(size=half)
    easy = rng.normal(size=half)
    hard = easy + 100.0 * rng.uniform(size=half)  # per-pair episode difficulty, shared by partners
    shaped = [np.asarray(pair_rank_fitness_shaping_fn(None, np.concatenate([b + diff, b]),
                                                      None, None)) for b in (easy, hard)]
    np.testing.assert_array_equal(shaped[0], shaped[1])
    np.testing.assert_allclose(shaped[0][:half], -shaped[0][half:], atol=1e-6)  # ± per pair
    order = np.argsort(diff)  # larger difference, larger shaped fitness of the + member
    assert np.all(np.diff(shaped[0][:half][order]) > 0)
    assert shaped[0].max() == 0.5 and shaped[0].min() == -0.5
