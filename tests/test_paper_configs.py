"""Every paper config (experiments/paper/, issue 13) names its figure and the official config
it follows, validates as shipped, and runs one ES generation at toy size.

The toy run keeps each config's model, ES and task switches (per-dataset outputs, label
permutation, normalization, projections) and shrinks only sizes; datasets that need a
download are swapped for generated ones of the same image shape (random: 10 classes, sum: 2,
so a mixture still has episodes of different class counts).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from vsml_es import run
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
GENERATED = {"mnist": "random", "fashion_mnist": "sum", "emnist": "random", "kmnist": "sum"}
CONFIGS = sorted(PAPER.glob("*.yaml"))


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


def toy_overrides(path: Path) -> list[str]:
    config = load_experiment(path)  # as shipped: every key and dataset name checked
    task = config.task
    for ref in (*task.mixture, task.dataset):
        assert ref.split(":")[0] in GENERATED.keys() | set(GENERATED.values()), ref
    # Every mixture becomes the same one, every single dataset 'random': the grid's cells then
    # share their compiled functions (a cell's data is all that tells it apart).
    data = ["task.mixture=[random, sum]"] if task.mixture else ["task.dataset=random"]
    hidden = [min(size, 3) for size in config.model.hidden_layers]
    return [*data,
            f"model.hidden_layers={hidden}",
            "metatest.datasets=[random:test]",
            "task.episode_length=4",
            "task.preprocess.resize=[5, 5]",
            "task.preprocess.projection_pool=2",
            "training.population_size=4",
            "training.eval_chunk=4",
            "training.generations=1",
            "logging.progress=false",
            "checkpoint.every=1",
            "distributed.workers=0"]


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
def test_one_generation_at_toy_size(group: str, tmp_path: Path) -> None:
    path = GROUPS[group][0]
    shipped = load_experiment(path)
    config = load_experiment(path, toy_overrides(path))
    # The toy run keeps the switches under test.
    assert dataclasses.replace(config.model, hidden_layers=()) == dataclasses.replace(
        shipped.model, hidden_layers=())
    assert len(config.model.hidden_layers) == len(shipped.model.hidden_layers)
    assert (config.task.per_dataset_outputs, config.task.permute_labels,
            config.task.preprocess.normalize, config.task.preprocess.projection) == (
        shipped.task.per_dataset_outputs, shipped.task.permute_labels,
        shipped.task.preprocess.normalize, shipped.task.preprocess.projection)
    result = run.train(config, tmp_path / "run", metatest=False, log=lambda message: None)
    assert result.generation == 1
    assert math.isfinite(result.final_fitness)
    # Paper configs follow the official code: no label permutation, official constants.
    assert not shipped.task.permute_labels and shipped.task.preprocess.normalize == "official"


def test_toy_groups_cover_every_config() -> None:
    assert sorted(p for paths in GROUPS.values() for p in paths) == CONFIGS
    assert len(GROUPS) <= 6  # the grid's 11 cells share two toy runs
