"""Scale (issue 16) against a real embedded Ray: workers redraw their members from the ES
recipe with fitness bit-identical to shipping the members, a worker slowed ten times is
covered by a backup copy with identical results, the ES compiles ask/tell once, and the new
options are checked before any work.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from evosax.algorithms import CMA_ES, Open_ES  # noqa: E402

from vsml_es import cli, distributed  # noqa: E402
from vsml_es.config import Config  # noqa: E402
from vsml_es.distributed import transfer  # noqa: E402
from vsml_es.evaluator import AskRecipe, EvalSpec, LocalEvaluator, build_eval_spec  # noqa: E402
from vsml_es.experiment import load_experiment  # noqa: E402
from vsml_es.tasks import Data  # noqa: E402
from vsml_es.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.slow

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = ["training.population_size=8", "training.eval_chunk=2", "training.generations=3",
        "task.episode_length=24", "checkpoint.every=100", "logging.progress=false",
        "distributed.workers=2"]


def params_of(trainer: Trainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(trainer.mean_params(trainer.run()))]


@pytest.fixture(scope="module")
def session() -> Iterator[tuple[Config, EvalSpec, Data]]:
    """One embedded Ray (loopback only) for the module, and the tiny run's task."""
    config = load_experiment(EXPERIMENT, TINY)
    with distributed.ray_session(config.distributed, log_to_driver=False):
        spec, data = build_eval_spec(config)
        yield config, spec, data


@pytest.fixture(scope="module")
def reference(session: tuple[Config, EvalSpec, Data],
              tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    config, spec, data = session
    run_dir = tmp_path_factory.mktemp("inprocess")
    return params_of(Trainer(config, run_dir, LocalEvaluator(spec, data), spec, data))


def test_workers_redraw_members_from_the_recipe_with_identical_fitness(
    session: tuple[Config, EvalSpec, Data], reference: list[np.ndarray], tmp_path: Path,
) -> None:
    config, spec, data = session
    logged: list[str] = []
    # No backup copies here: a losing copy still running would change the next shard plan.
    no_backups = dataclasses.replace(config.distributed, backup_after=0.0)
    evaluator = distributed.RayEvaluator(spec, data, no_backups, log=logged.append)
    try:
        trainer = Trainer(config, tmp_path, evaluator, spec, data)
        params = params_of(trainer)
        # Both paths on one more generation's population, side by side.
        es, state = trainer.method.strategy, trainer.initial_state()
        key = jax.random.key(7)
        population, _ = es.algorithm.ask(key, state.es_state, es.params)
        recipe = AskRecipe(es.algorithm, key, state.es_state, es.params)
        by_recipe = evaluator.evaluate_asked(recipe, population, 5, trainer.method.episode_ids)
        recipe_bytes = evaluator.max_bytes_to_one_worker
        by_members = evaluator.evaluate(population, 5, trainer.method.episode_ids)
        members_bytes = evaluator.max_bytes_to_one_worker
        verified = [slot.verified for slot in evaluator.slots]
    finally:
        evaluator.close()
    assert evaluator.transfer.mode == "recipe", evaluator.transfer
    assert any("population transfer: recipe" in line for line in logged), logged
    assert all(verified), "a worker's redrawn members were never checked against the driver's"
    for ours, theirs in zip(params, reference, strict=True):
        np.testing.assert_array_equal(ours, theirs, strict=True)
    np.testing.assert_array_equal(by_recipe.fitness, by_members.fitness, strict=True)
    np.testing.assert_array_equal(by_recipe.accuracy, by_members.accuracy, strict=True)
    mean = transfer.nbytes(trainer.template)
    assert mean < recipe_bytes < mean + 1024  # the mean (Adam's moments stay), a few ids
    assert members_bytes == 4 * mean + 4 * 4  # a shard: 4 members and their episode ids


def test_a_worker_slowed_ten_times_is_covered_by_a_backup_copy(
    session: tuple[Config, EvalSpec, Data], reference: list[np.ndarray], tmp_path: Path,
) -> None:
    config, spec, data = session
    evaluator = distributed.RayEvaluator(spec, data, config.distributed, log=lambda _: None,
                                         slowdown={1: 10.0})
    try:
        params = params_of(Trainer(config, tmp_path, evaluator, spec, data))
    finally:
        evaluator.close()
    assert evaluator.backups_sent >= 1
    assert evaluator.backups_won >= 1, "the slowed worker's own answer was always used"
    for ours, theirs in zip(params, reference, strict=True):
        np.testing.assert_array_equal(ours, theirs, strict=True)


def test_ask_and_tell_compile_once_across_generations_and_trainers(
    session: tuple[Config, EvalSpec, Data], tmp_path: Path,
) -> None:
    config, spec, data = session
    trainers = [Trainer(config, tmp_path / str(i), LocalEvaluator(spec, data), spec, data)
                for i in range(2)]
    algorithm = trainers[0].method.strategy.algorithm
    assert trainers[1].method.strategy.algorithm is algorithm  # one object: one jit cache entry
    sizes = []
    for trainer in trainers:
        state = trainer.initial_state()
        for _ in range(3):
            state, _ = trainer.step(state)
            sizes.append((type(algorithm).ask._cache_size(), type(algorithm).tell._cache_size()))
    assert len(set(sizes)) == 1, f"ask/tell compiled again after generation 0: {sizes}"


def test_strategies_that_cannot_be_redrawn_cheaply_keep_the_members_path() -> None:
    template = {"w": jnp.zeros((40,))}

    class Impure(Open_ES):  # ask reads a counter outside (key, state, params)
        calls = 0

        def ask(self, key: jax.Array, state: object, params: object) -> tuple[object, object]:
            Impure.calls += 1
            return super().ask(jax.random.fold_in(key, Impure.calls), state, params)

    for algorithm, why in ((CMA_ES(population_size=8, solution=template), "not smaller"),
                           (Impure(population_size=8, solution=template), "did not redraw")):
        params = algorithm.default_params
        state = algorithm.init(jax.random.key(0), template, params)
        key = jax.random.key(1)
        population, _ = algorithm.ask(key, state, params)
        recipe = AskRecipe(algorithm, key, state, params)
        choice, _ = transfer.choose("auto", recipe, population, shards=2)
        assert choice.mode == "members" and why in choice.reason, choice
    algorithm = Open_ES(population_size=8, solution=template)
    state = algorithm.init(jax.random.key(0), template, algorithm.default_params)
    population, _ = algorithm.ask(key, state, algorithm.default_params)
    recipe = AskRecipe(algorithm, key, state, algorithm.default_params)
    assert transfer.choose("auto", recipe, population, shards=2)[0].mode == "recipe"
    assert transfer.choose("auto", recipe, population, shards=8)[0].mode == "members"  # 1 each
    assert transfer.choose("members", recipe, population, shards=2)[0].mode == "members"


@pytest.mark.parametrize("setting, message", [
    ("distributed.transfer=shared_noise", "valid values: auto, recipe, members"),
    ("distributed.backup_after=-1", "distributed.backup_after"),
])
def test_bad_scale_options_stop_before_any_work(
    setting: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["train", EXPERIMENT, "--set", setting, "--run-dir", str(tmp_path / "r"),
                     "--no-metatest"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
