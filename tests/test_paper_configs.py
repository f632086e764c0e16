"""Every paper config (experiments/paper/, issue 13) names its figure and the official config
it follows, validates as shipped, and runs one ES generation at toy size.

The toy run keeps each config's model, ES and task switches (method, per-dataset outputs,
class subsets, label permutation, normalization, projections) and shrinks only sizes; the
datasets the paper configs name (MNIST, Fashion-MNIST, EMNIST, KMNIST, CIFAR-10) need a
download or a prepare step, so the toy run swaps them for generated ones ('random': 10
classes, 'sum': 2, so a mixture still has episodes of different class counts), resized to a
common toy image. The few-shot config (omniglot.yaml) keeps its dataset name and episodes: the
test registers a generated stand-in for 'omniglot' (a few classes of 105x105 uint8 images,
labels numbered per split as TFDS's are). Without their data, the shipped configs stop with
exit code 2 and the 'vsml-es data prepare' command
(test_missing_data_names_the_prepare_command).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

from vsml_es import run
from vsml_es.cli import main
from vsml_es.data import ArrayDataset, catalog, registry
from vsml_es.experiment import load_experiment

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "paper"
# Files of the official repository (louiskirsch/vsml-neurips2021 at 5b696c9, configs/).
OFFICIAL_CONFIGS = {
    "array/conv.yaml", "array/datasets.yaml", "array/eval_invariances.yaml", "array/sgd.yaml",
    "backprop.yaml", "backward_pass.yaml", "cifar10.yaml", "conv.yaml", "deep.yaml",
    "default.yaml", "evaluation.yaml", "fwmemory.yaml", "hebbian.yaml", "invariances.yaml",
    "metarnn.yaml", "no_fashion_mnist.yaml", "omniglot.yaml", "pad.yaml", "pretrained.yaml",
    "rand_proj.yaml", "sgd.yaml", "sgd_omniglot.yaml", "test.yaml",
}
GENERATED = {"mnist": "random", "fashion_mnist": "sum", "emnist": "random", "kmnist": "sum",
             "emnist_byclass": "random",
             "cifar10": "random"}
CONFIGS = sorted(PAPER.glob("*.yaml"))
FEWSHOT_STAND_IN = "omniglot"  # few-shot configs keep the name; the test swaps in its data


def omniglot_stand_in(split: str, data_dir: Path) -> ArrayDataset:
    """7 characters of 3 drawings each per split, 105x105x1 uint8, TFDS-style global labels
    (the test split's characters come after the train split's)."""
    del data_dir
    rng = np.random.default_rng(len(split))
    y = np.repeat(np.arange(7) + (0 if split == "train" else 7), 3).astype(np.int32)
    x = rng.integers(0, 256, (len(y), 105, 105, 1), dtype=np.uint8)
    return ArrayDataset("omniglot", split, x, y, num_classes=1623, mean=235.0, std=68.0)


@pytest.fixture
def omniglot_generated(monkeypatch):
    spec = registry._SPECS["omniglot"]
    monkeypatch.setitem(registry._SPECS, "omniglot", dataclasses.replace(
        spec, loader=omniglot_stand_in, status=None, source="generated stand-in (test)"))
    catalog._load_cached.cache_clear()
    yield
    catalog._load_cached.cache_clear()


def test_paper_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert "fig6_mnist_projections.yaml" in names
    assert len([n for n in names if n.startswith("fig8_")]) == 11  # the grid's 11 cells


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_header_names_figure_and_official_config(path: Path) -> None:
    header = path.read_text().split("\n\n")[0]
    assert header.startswith("# Paper")
    named = set(re.findall(r"configs/([\w/]+\.yaml)", header))
    assert named and named <= OFFICIAL_CONFIGS, named
    if path.name.startswith("fig"):
        figure = re.match(r"fig(\d+)_", path.name).group(1)
        assert f"Figure {figure}" in header


# One ES generation of 4, in-process, checkpointed: the toy run of every config.
TOY_RUN = ["training.population_size=4", "training.eval_chunk=4", "training.generations=1",
           "logging.progress=false", "checkpoint.every=1", "distributed.workers=0"]


def toy_overrides(path: Path) -> list[str]:
    config = load_experiment(path)  # as shipped: every key and dataset name checked
    task = config.task
    if task.ways:  # few-shot: its own data and episode length are already toy-sized
        assert task.dataset == FEWSHOT_STAND_IN
        return ["metatest.datasets=[omniglot:test]",
                "task.preprocess.resize=[5, 5]",
                "metatest.preprocess.resize=[5, 5]",
                *TOY_RUN]
    for ref in (*task.mixture, task.dataset):
        assert ref.split(":")[0] in GENERATED.keys() | set(GENERATED.values()), ref
    # Every mixture becomes the same one, every single dataset 'random': the grid's cells then
    # share their compiled functions (a cell's data is all that tells it apart).
    data = ["task.mixture=[random, sum]"] if task.mixture else ["task.dataset=random"]
    hidden = [min(size, 3) for size in config.model.hidden_layers]
    # A carried imitation horizon must stay a multiple of the (toy) episode length.
    horizon = ["training.imitation_horizon=8"] if config.training.imitation_horizon else []
    # Several input sizes stay several (two toy ones: each size compiles its own evaluation).
    size = (["task.input_sizes=[[5, 5], [3, 3]]"] if task.input_sizes
            else ["task.preprocess.resize=[5, 5]"])
    return [*data, *horizon, *size,
            f"model.hidden_layers={hidden}",
            "metatest.datasets=[random:test]",
            "task.episode_length=4",
            "task.preprocess.projection_pool=2",
            *TOY_RUN]


def toy_groups() -> dict[str, list[Path]]:
    """The paper configs by their toy-size run: the grid's cells differ only in their data,
    which the toy run swaps for the same generated sets, so each distinct run is made once."""
    groups: dict[str, list[Path]] = {}
    for path in CONFIGS:
        config = load_experiment(path, toy_overrides(path))
        key = repr(dataclasses.replace(config, name="toy"))
        groups.setdefault(key, []).append(path)
    return {"+".join(p.stem for p in paths): paths for paths in groups.values()}


GROUPS = toy_groups()


@pytest.mark.parametrize("group", list(GROUPS))
def test_one_generation_at_toy_size(group: str, tmp_path: Path, request) -> None:
    path = GROUPS[group][0]
    if load_experiment(path).task.ways:
        request.getfixturevalue("omniglot_generated")
    shipped = load_experiment(path)
    config = load_experiment(path, toy_overrides(path))
    # The toy run keeps the switches under test.
    assert dataclasses.replace(config.model, hidden_layers=()) == dataclasses.replace(
        shipped.model, hidden_layers=())
    assert len(config.model.hidden_layers) == len(shipped.model.hidden_layers)
    assert (config.task.per_dataset_outputs, config.task.permute_labels,
            config.task.preprocess.normalize, config.task.preprocess.projection,
            config.task.class_subsets, config.training.method, config.task.ways,
            config.task.shots, config.task.fitness, config.task.preprocess.antialias,
            len(config.task.input_sizes) > 1) == (
        shipped.task.per_dataset_outputs, shipped.task.permute_labels,
        shipped.task.preprocess.normalize, shipped.task.preprocess.projection,
        shipped.task.class_subsets, shipped.training.method, shipped.task.ways,
        shipped.task.shots, shipped.task.fitness, shipped.task.preprocess.antialias,
        len(shipped.task.input_sizes) > 1)
    result = run.train(config, tmp_path / "run", metatest=False, log=lambda message: None)
    assert result.generation == 1
    assert math.isfinite(result.final_fitness)
    # Paper configs follow the official code: no label permutation, official constants.
    assert not shipped.task.permute_labels and shipped.task.preprocess.normalize == "official"


def test_toy_groups_cover_every_config() -> None:
    assert sorted(p for paths in GROUPS.values() for p in paths) == CONFIGS
    assert len(GROUPS) <= len(CONFIGS) - 9  # the grid's 11 cells share two toy runs


# Every official config that a paper figure or table runs, and the paper config(s) here that
# follow it. The others: default.yaml (under every one), evaluation.yaml and sgd.yaml /
# array/sgd.yaml (the meta-test protocol and SGD/Adam rows, in each config's metatest section),
# metarnn/fwmemory/hebbian.yaml with pad.yaml (fig8's baselines: compare.learners in
# experiments/datasets/base.yaml), no_fashion_mnist.yaml (the fig8 cell leave_out_fashion_mnist),
# pretrained.yaml / test.yaml (restoring a run, a smoke test).
FOLLOWS = {
    "omniglot.yaml": ["omniglot.yaml"],
    "sgd_omniglot.yaml": ["omniglot.yaml"],
    "conv.yaml": ["conv_vsml.yaml"],
    "rand_proj.yaml": ["fig6_mnist_projections.yaml"],
    "backprop.yaml": ["fig6_mnist_projections_backprop.yaml"],
    "array/datasets.yaml": [f"fig8_{c}.yaml" for c in (
        "train_all", "train_mnist", "train_fashion_mnist", "train_random", "train_emnist",
        "train_kmnist", "leave_out_mnist", "leave_out_fashion_mnist", "leave_out_random",
        "leave_out_emnist", "leave_out_kmnist")],
    "invariances.yaml": ["invariances.yaml"],
    "array/eval_invariances.yaml": ["invariances.yaml"],
    "cifar10.yaml": ["cifar10.yaml"],
    "deep.yaml": ["deep_vsml.yaml"],
    "backward_pass.yaml": ["backward_pass.yaml"],
}


@pytest.mark.parametrize("official", sorted(FOLLOWS))
def test_official_config_has_its_paper_configs(official: str) -> None:
    for name in FOLLOWS[official]:
        header = (PAPER / name).read_text().split("\n\n")[0]
        assert f"configs/{official}" in header, (official, name)


@pytest.mark.parametrize(("name", "dataset"), [("cifar10.yaml", "cifar10"),
                                               ("invariances.yaml", "mnist"),
                                               ("fig8_train_emnist.yaml", "emnist_byclass")])
def test_missing_data_names_the_prepare_command(name: str, dataset: str, capsys,
                                                tmp_path: Path) -> None:
    """The datasets are not prepared in the tests' data dir: exit 2, naming the command."""
    code = main(["train", str(PAPER / name), "--run-dir", str(tmp_path / "run")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"vsml-es data prepare {dataset}" in err, err
