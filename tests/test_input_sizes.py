"""task.input_sizes: one population meta-trained at several image sizes (the official
invariances.yaml kept MNIST at 28x28 or resized it to 14x14 or 32x32, one size per MPI
worker). Checked against the plain single-size path: each size is exactly the task built at
that size, and each member is scored at the size its episode id picks, whatever its shard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import refused_before_work

from vsml_es.cli import main
from vsml_es.config import PreprocessConfig, TaskConfig
from vsml_es.evaluator import build_eval_spec, evaluate_members
from vsml_es.experiment import load_experiment
from vsml_es.multisize import MultiSizeTask, build_training_task, single_size
from vsml_es.tasks import build_task, task_at_size

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
SIZES = ((8, 8), (4, 4), (10, 10))  # digits' own 8x8 (no resize), smaller, larger


def test_each_size_is_the_task_built_at_that_size() -> None:
    cfg = TaskConfig(dataset="digits", num_classes=10, episode_length=12, permute_labels=False,
                     per_dataset_outputs=True, class_subsets=((6, 2, 3), (1, 5, 4, 9)),
                     input_sizes=SIZES,
                     preprocess=PreprocessConfig(projection="pool", projection_pool=2,
                                                 projection_fraction=0.5, antialias=False))
    multi, data = build_training_task(cfg)
    assert isinstance(multi, MultiSizeTask) and multi.sizes == SIZES
    assert single_size(multi) is multi.tasks[0] and multi.num_features == 64
    _, native_data = build_task(dataclasses.replace(cfg, input_sizes=()))
    for size, task in zip(SIZES, multi.tasks, strict=True):
        built, built_data = build_task(task_at_size(cfg, size))
        assert task == built  # every field: resize, shapes, class subsets, weights, masks
        assert task.num_features == size[0] * size[1]
        for ours, theirs in zip(data, built_data, strict=True):  # one copy of the data
            np.testing.assert_array_equal(np.asarray(ours.x), np.asarray(theirs.x))
    # The data's own size is no resize at all (the official 'resize: null').
    native = dataclasses.replace(multi.tasks[0], parts=tuple(
        dataclasses.replace(p, preprocess=dataclasses.replace(p.preprocess, resize=()))
        for p in multi.tasks[0].parts))
    spec = multi.tasks[0].episode(jax.random.key(5))

    def stream(task, task_data):
        return jax.vmap(lambda t: task.example(task_data, spec, t)[0])(jnp.arange(12))

    np.testing.assert_array_equal(jax.jit(stream, static_argnums=0)(multi.tasks[0], data),
                                  jax.jit(stream, static_argnums=0)(native, native_data))


def test_each_member_is_scored_at_the_size_of_its_episode_id() -> None:
    config = load_experiment(QUICKSTART, ["task.input_sizes=[[8, 8], [4, 4]]",
                                          "task.episode_length=6",
                                          "model.backward_pass=false",
                                          "training.eval_chunk=4"])
    spec, data = build_eval_spec(config)
    assert isinstance(spec.task, MultiSizeTask)
    keys = jax.random.split(jax.random.key(0), 6)
    population = jax.tree.map(lambda *leaves: np.stack(leaves), *[
        spec.learner.init_params(k, 64, 10) for k in keys])
    ids = np.array([0, 1, 2, 0, 1, 2], np.int32)  # antithetic-style: partners share an id
    one = (jax.local_devices()[0],)  # one compiled function per size, whatever the host
    got = evaluate_members(spec, data, population, 7, ids, one)
    at_size = [evaluate_members(dataclasses.replace(spec, task=t), data, population, 7, ids, one)
               for t in spec.task.tasks]
    want = np.array([at_size[i % 2].fitness[m] for m, i in enumerate(ids)])
    np.testing.assert_array_equal(got.fitness, want)
    assert np.all(at_size[0].fitness != at_size[1].fitness)  # the size does change the episode
    # Any shard of the members gets the same scores (shards split a population arbitrarily).
    shard = np.array([1, 3, 5])
    part = evaluate_members(spec, data, jax.tree.map(lambda a: a[shard], population), 7,
                            ids[shard], one)
    np.testing.assert_array_equal(part.fitness, got.fitness[shard])
    np.testing.assert_array_equal(part.accuracy, got.accuracy[shard])


@pytest.mark.parametrize(("overrides", "words"), [
    (["task.input_sizes=[[8]]"], "'task.input_sizes[0]' is [8]"),
    (["task.input_sizes=[[0, 8]]"], "'task.input_sizes[0]' is [0, 8]"),
    (["task.input_sizes=[[8, 8], [8, 8]]"], "lists a size twice"),
    (["task.input_sizes=[[8, 8], [4, 4]]", "task.preprocess.resize=[6, 6]"],
     "'task.preprocess.resize' do not go together"),
    (["task.input_sizes=[[8, 8], [4, 4]]", "training.method=backprop"],
     "needs training.method: es"),
    (["task.input_sizes=[[8, 8], [4, 4]]", "model.learner=hebbian"],
     "model.learner names hebbian"),
    (["task.input_sizes=[[8, 8], [4, 4]]", "task.dataset=mnist1d"], "not images"),
])
def test_bad_input_sizes_exit_2_before_any_work(overrides: list[str], words: str, capsys,
                                                 tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    refused_before_work(["train", str(QUICKSTART), "--run-dir", str(run_dir)], run_dir,
                        overrides, words, capsys)


def test_compare_refuses_learners_tied_to_the_input_size(capsys, tmp_path: Path) -> None:
    argv = ["compare", str(QUICKSTART), "--out", str(tmp_path / "out"),
            "--set", "task.input_sizes=[[8, 8], [4, 4]]"]
    assert main(argv) == 2
    assert "compare.learners names hebbian" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists()
