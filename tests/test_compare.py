"""vsml-es compare: baseline tuning never sees meta-test data; a short run writes the table,
CSVs and plots; a re-run reuses finished meta-training; the shipped experiments validate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import refused_before_work, set_flags

from vsml_es import tasks
from vsml_es.cli import main
from vsml_es.compare import run_compare
from vsml_es.experiment import load_experiment
from vsml_es.metatest import TUNING_SEED_OFFSET, eval_keys, tune_baselines
from vsml_es.run import evaluate_file

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
QUICKSTART = str(EXPERIMENTS / "quickstart.yaml")
RESULTS = EXPERIMENTS.parent / "docs" / "results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def compare_refused(out: Path, capsys, overrides: list[str], message: str) -> None:
    """'vsml-es compare' with these overrides exits 2 with ``message``, writing nothing."""
    refused_before_work(["compare", QUICKSTART, "--out", str(out)], out, overrides, message,
                        capsys)


def test_learning_rate_search_sees_only_meta_training_data(dataset_loads, tiny_overrides):
    seen = dataset_loads
    base = [*tiny_overrides, "metatest.baselines=[sgd, adam]"]
    config = load_experiment(QUICKSTART, [*base, "metatest.datasets=[digits:test]"])
    tuned = tune_baselines(config, *tasks.build_task(config.task), 12)
    assert seen and set(seen) == {("digits", "train")}, seen
    # Whatever the meta-test datasets are, the search and its outcome are the same.
    other = load_experiment(QUICKSTART, [*base, "metatest.datasets=[mnist1d:test, random:test]"])
    assert tune_baselines(other, *tasks.build_task(other.task), 12) == tuned
    assert set(seen) == {("digits", "train")}
    # And its streams are not the evaluation streams (its own seed offset).
    assert TUNING_SEED_OFFSET != 0
    evaluation = np.asarray(jax.random.key_data(eval_keys(1, 4)))
    tuning = np.asarray(jax.random.key_data(eval_keys(1 + TUNING_SEED_OFFSET, 4)))
    assert not any((tuning == row).all(axis=-1).any() for row in evaluation)


def test_short_compare_run_writes_table_csvs_and_plots(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "cmp"
    overrides = [*tiny_overrides, "compare.learners=[vsml, fwm]",
                 "metatest.baselines=[sgd, adam_mlp]", "metatest.mlp_hidden=8",
                 "metatest.steps=30", "model.baseline_hidden=8", "metatest.datasets=[digits:test]",
                 "compare.es_settings={fwm: {sigma: 0.2, learning_rate: 0.01}}"]
    assert main(["compare", QUICKSTART, "--out", str(out), *set_flags(overrides)]) == 0
    printed = capsys.readouterr().out
    mt = out / "metatest"
    table = (mt / "table.md").read_text()
    assert table.splitlines()[0] in printed
    labels = ["VSML", "FWM (delta rule)", "SGD linear (lr", "Adam MLP-8 (lr"]
    for label in labels:
        assert label in table
    assert "| acc @1 | acc @10 | acc @25 |" in table and "acc @50" not in table  # 30 steps

    rows = list(csv.DictReader(open(mt / "summary.csv")))
    assert [r["method"].split(" (lr")[0] for r in rows] == ["VSML", "FWM (delta rule)",
                                                           "SGD linear", "Adam MLP-8"]
    assert all(0.0 <= float(r["acc@25"]) <= 1.0 and r["episodes"] == "4" for r in rows)
    with open(mt / "curves_digits_test.csv") as f:
        curves = list(csv.reader(f))
    assert len(curves) == 1 + 30 and len(curves[0]) == 1 + 4 * len(labels)
    png = (mt / "curves_digits_test.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    tuning = list(csv.DictReader(open(mt / "tuning.csv")))
    for name, grid in (("sgd", 6), ("adam_mlp", 6)):
        mine = [r for r in tuning if r["baseline"] == name]
        assert len(mine) == grid and sum(int(r["chosen"]) for r in mine) == 1
    timing = json.loads((out / "timing.json").read_text())
    assert not timing["vsml"]["reused"] and (out / "train_fwm" / "params.npz").is_file()
    # Per-learner ES settings reach that learner's run only.
    fwm_run, vsml_run = (load_experiment(out / f"train_{n}" / "config.yaml")
                         for n in ("fwm", "vsml"))
    assert (fwm_run.training.sigma, fwm_run.training.learning_rate) == (0.2, 0.01)
    assert vsml_run.training.sigma == load_experiment(QUICKSTART, tiny_overrides).training.sigma
    assert "fwm (" in printed and "sigma 0.2 lr 0.01" in printed

    # A re-run reuses the finished meta-training and reproduces the same numbers.
    config = load_experiment(QUICKSTART, overrides)
    summaries, timing = run_compare(config, out, log=lambda message: None)
    assert timing["vsml"]["reused"] and timing["fwm"]["reused"]
    assert (mt / "table.md").read_text() == table
    assert [s["acc@10"] for s in summaries] == [float(r["acc@10"]) for r in rows]


def test_pretrained_learner_is_meta_tested_as_its_file_says(tmp_path, tiny_overrides):
    """A learner file joins the table under its label, built from the config it carries (a
    16-unit VSML here, while this comparison trains a 4-unit one), on the same streams as
    ``vsml-es evaluate`` gives it."""
    shipped = RESULTS / "imitation-kl-task3-seed{seed}.vsml"
    overrides = [*tiny_overrides, "compare.learners=[vsml]", "model.state_size=4",
                 "metatest.baselines=[]", "metatest.steps=30", "training.seed=1",
                 f"compare.pretrained={{vsml_imitation: '{shipped}'}}"]
    config = load_experiment(QUICKSTART, overrides)
    messages: list[str] = []
    summaries, timing = run_compare(config, tmp_path / "cmp", log=messages.append)
    assert [s["method"] for s in summaries] == ["VSML", "vsml_imitation"]
    assert "vsml_imitation" not in timing  # trained elsewhere: not in this budget
    assert any("imitation-kl-task3-seed1.vsml" in m for m in messages)  # {seed} -> 1
    mt = config.metatest
    file_rows, _ = evaluate_file(RESULTS / "imitation-kl-task3-seed1.vsml", ("digits:test",),
                                 30, 4, ["metatest.baselines=[]",
                                         f"metatest.seed={config.metatest.seed}",
                                         f"metatest.report_steps={list(mt.report_steps)}"],
                                 tmp_path / "eval")
    mine, theirs = summaries[1], file_rows[0]
    steps = [key for key in mine if key.startswith("acc@")]
    assert steps and [mine[k] for k in steps] == [theirs[k] for k in steps]
    assert mine["acc@25"] != summaries[0]["acc@25"] or mine["acc@10"] != summaries[0]["acc@10"]


def test_seeds_are_compared_apart_and_pooled_across(tmp_path, tiny_overrides, capsys):
    """--seeds 2: one comparison per meta-training seed (each with its own learner file), and a
    table whose figures are the mean of the seeds' own, with a t-interval across seeds for
    what the seed changes and none for the tuned baseline, which it does not."""
    out = tmp_path / "cmp"
    shipped = RESULTS / "imitation-kl-task3-seed{seed}.vsml"
    overrides = [*tiny_overrides, "compare.learners=[fwm]", "metatest.baselines=[sgd]",
                 "metatest.steps=30", "metatest.report_steps=[10, 25]",
                 f"compare.pretrained={{mine: '{shipped}'}}"]
    assert main(["compare", QUICKSTART, "--out", str(out), "--seeds", "2",
                 *set_flags(overrides)]) == 0
    printed = capsys.readouterr().out
    assert "table across seeds" in printed
    per_seed = [{(r["dataset"], r["method"]): r for r in
                 csv.DictReader(open(out / f"seed{s}" / "metatest" / "summary.csv"))}
                for s in (0, 1)]
    assert json.loads((out / "seed1" / "timing.json").read_text())["fwm"]["reused"] is False
    pooled = list(csv.DictReader(open(out / "summary.csv")))
    assert {r["method"].split(" (lr")[0] for r in pooled} == {"mine", "FWM (delta rule)",
                                                             "SGD linear"}
    for row in pooled:
        key = (row["dataset"], row["method"])
        seeds = [float(p[key]["acc@25"]) for p in per_seed]
        assert row["seeds"] == "2"
        assert float(row["acc@25"]) == pytest.approx(np.mean(seeds), abs=1e-5)
        if row["method"].startswith("SGD"):  # tuned on the same streams whatever the seed
            assert seeds[0] == seeds[1] and float(row["acc@25_t95"]) == 0.0
    mine = [r for r in pooled if r["method"] == "mine"][0]
    seeds = [float(p[("digits:test", "mine")]["acc@10"]) for p in per_seed]
    assert seeds[0] != seeds[1]  # two different learner files
    half = 12.706 * np.std(seeds, ddof=1) / np.sqrt(2)
    assert float(mine["acc@10_t95"]) == pytest.approx(half, rel=1e-3)
    assert "| digits:test | mine | 2 |" in (out / "table.md").read_text()
    assert (out / "curves_digits_test.png").read_bytes().startswith(PNG_MAGIC)
    assert main(["compare", QUICKSTART, "--out", str(tmp_path / "x"), "--seeds", "0"]) == 2


@pytest.mark.parametrize("setting, message", [
    ("{vsml: docs/results/imitation-kl-task3-seed0.vsml}", "has the name of a learner"),
    ("{mine: 'docs/results/nothing-{seed}.vsml'}", "no file 'docs/results/nothing-0.vsml'"),
    ("{mine: ' '}", "is empty"),
    ("{mine: [a, b]}", "expects str"),
])
def test_pretrained_learner_errors_before_work(tmp_path, capsys, setting, message):
    compare_refused(tmp_path / "never", capsys, [f"compare.pretrained={setting}"], message)


def test_compare_rejects_bad_input_before_work(tmp_path, capsys):
    compare_refused(tmp_path / "never", capsys, ["compare.learners=[vsml, hebian]"],
                        "Did you mean 'hebbian'")
    assert main(["compare", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("setting, message", [
    ("{meta_rnn: {population_size: 8}}", "would change the meta-training budget"),
    ("{fwm: {sigma: 0.1}}", "not in compare.learners"),
    ("{meta_rnn: {sigma: -1}}", "must be positive"),
    ("{meta_rnn: {sigma: fast}}", "expects float"),
    ("{meta_rnn: {seed: 3}}", "is not an ES setting"),
    ("{meta_rnn: 0.1}", "must be a mapping"),
    ("{meta_rnn: {strategy: CMA_ESS}}", "compare.es_settings.meta_rnn: Unknown ES strategy"),
    ("{meta_rnn: {strategy: SNES, fitness_shaping: pair_rank}}", "does not sample mirrored"),
])
def test_per_learner_es_settings_are_checked_up_front(tmp_path, capsys, setting, message):
    compare_refused(tmp_path / "never", capsys, ["compare.learners=[vsml, meta_rnn]",
                                                     f"compare.es_settings={setting}"], message)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("paper_*.yaml"))
                         + [EXPERIMENTS / "cpu_generalization.yaml"], ids=lambda p: p.name)
def test_shipped_compare_experiments_validate(path):
    config = load_experiment(path)
    assert config.compare.learners and config.metatest.baselines


def test_cpu_generalization_mixture_matches_the_meta_test_input_size():
    from vsml_es.evaluator import build_eval_spec

    config = load_experiment(EXPERIMENTS / "cpu_generalization.yaml")
    assert "fashion_mnist" not in " ".join(config.task.mixture)  # unseen in meta-training
    spec, _ = build_eval_spec(config)
    assert spec.task.num_features == 64
    for ref in config.metatest.datasets:
        name, split = tasks.parse_dataset_ref(ref, "test")
        from vsml_es.data import DatasetError, dataset_status, prepare_dataset

        if not dataset_status(name).available:
            try:  # offline, from local source files (Debian's dataset-fashion-mnist in CI)
                prepare_dataset(name, progress=False)
            except DatasetError as err:
                pytest.skip(f"{name} cannot be prepared here: {err}")
        task, _ = tasks.load_task(ref, "test", 10, 10, preprocess=config.metatest.preprocess,
                                  num_features=64)
        assert task.num_features == 64
