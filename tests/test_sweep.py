"""``vsml-es sweep``: a grid x seeds as Ray Tune trials on a real private Ray, each trial an
ordinary run directory, one table across seeds; a stopped sweep continues on rerun without
retraining what finished; every bad input stops before Ray starts."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vsml_es import cli
from vsml_es.config import load_config
from vsml_es.reporting import t_interval
from vsml_es.runs import read_metrics, summarize
from vsml_es.storage.checkpoint import checkpoint_dirs
from vsml_es.sweep import grid_points, parse_grid

QUICKSTART = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TOY = ["training.population_size=8", "training.generations=3", "training.eval_chunk=4",
       "task.episode_length=8", "metatest.episodes=4", "metatest.steps=12",
       "metatest.datasets=[digits:test]", "metatest.baselines=[]", "checkpoint.every=1",
       "logging.progress=false"]
WALL_CLOCK = ("seconds", "wall_time")  # the only metrics that differ between equal runs
PNG = b"\x89PNG\r\n\x1a\n"


def sweep_args(out: Path, *extra: str) -> list[str]:
    sets = [arg for kv in TOY for arg in ("--set", kv)]
    return ["sweep", QUICKSTART, *sets, "--out", str(out), "--workers", "1", *extra]


def files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a run directory with its modification time and content."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def vsml_row(run_dir: Path) -> dict[str, str]:
    """The meta-learned learner's meta-test row (the first of its dataset)."""
    with open(run_dir / "metatest" / "summary.csv", newline="") as f:
        return next(csv.DictReader(f))


def error(capsys) -> str:
    """What the command printed to stderr, as one line (messages are wrapped at 100)."""
    return " ".join(capsys.readouterr().err.split())


def without_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def test_sweep_runs_every_trial_then_continues_a_stopped_sweep(tmp_path, capsys):
    out = tmp_path / "sweep"
    ray_results = Path.home() / "ray_results"
    had_ray_results = ray_results.exists()
    args = sweep_args(out, "--grid", "training.sigma=0.05,0.1", "--seeds", "2")
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    assert "4 to start" in printed.out
    assert "Trial" not in printed.out + printed.err  # no Tune progress tables or chatter

    # Four ordinary, finished run directories; seed k is training.seed + k.
    runs = {p.name: p for p in (out / "runs").iterdir()}
    assert sorted(runs) == ["sigma_0.05-seed0", "sigma_0.05-seed1", "sigma_0.1-seed0",
                            "sigma_0.1-seed1"]
    for name, run in runs.items():
        assert summarize(run).status == "finished", name
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["training"]["seed"] == int(name[-1])
        assert config["training"]["sigma"] == float(name.split("_")[1].split("-")[0])
        assert config["distributed"]["workers"] == 0  # evaluated inside the trial

    # One row per grid point: mean and t-interval of the per-seed values in the run dirs.
    with open(out / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["training.sigma"] for row in table] == ["0.05", "0.1"]
    for row in table:
        seeds = [runs[f"sigma_{row['training.sigma']}-seed{k}"] for k in (0, 1)]
        assert row["seeds"] == "2"
        fitness = np.array([read_metrics(run)[-1]["fitness_mean"] for run in seeds])
        assert float(row["final_fitness"]) == pytest.approx(fitness.mean(), rel=1e-12)
        assert float(row["final_fitness_ci95"]) == pytest.approx(t_interval(fitness), rel=1e-12)
        for step in (1, 10):
            acc = np.array([float(vsml_row(run)[f"acc@{step}"]) for run in seeds])
            column = f"digits:test acc@{step}"
            assert float(row[column]) == pytest.approx(acc.mean(), rel=1e-12, abs=1e-15)
            assert float(row[f"{column}_ci95"]) == pytest.approx(t_interval(acc), rel=1e-12,
                                                                 abs=1e-15)
    markdown = (out / "sweep.md").read_text()
    assert markdown.count("| 2/2 |") == 2 and f"{float(table[0]['final_fitness']):.4f}" in markdown
    assert (out / "sweep.png").read_bytes().startswith(PNG)
    record = yaml.safe_load((out / "sweep.yaml").read_text())
    assert record["grid"] == {"training.sigma": [0.05, 0.1]} and record["seeds"] == 2
    assert (out / "tune").is_dir()  # Tune's bookkeeping stays in OUT
    assert ray_results.exists() == had_ray_results  # and never goes to ~/ray_results
    before_csv = (out / "sweep.csv").read_bytes()

    # Stop one trial as kill -9 leaves it: its newest checkpoint an early one, "running" with
    # a process that is gone, no final parameters or meta-test. Another never started.
    stopped = runs["sigma_0.1-seed1"]
    metrics = without_clock(read_metrics(stopped))
    for generation, path in checkpoint_dirs(stopped):
        if generation > 1:
            shutil.rmtree(path)
    for name in ("params.npz", "metatest", "plots"):
        path = stopped / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    status = json.loads((stopped / "status.json").read_text())
    (stopped / "status.json").write_text(json.dumps({**status, "state": "running",
                                                     "pid": 2**22 + 4321}))
    untouched = {name: files(run) for name, run in runs.items() if run != stopped}

    # A trial that is still running (its process alive) is not touched: the rerun refuses.
    alive = json.loads((stopped / "status.json").read_text())
    (stopped / "status.json").write_text(json.dumps({**alive, "pid": os.getpid()}))
    assert cli.main(args) == 2
    assert "still running" in error(capsys)
    (stopped / "status.json").write_text(json.dumps(alive))

    assert cli.main(args) == 0
    assert "3 finished, 1 to resume, 0 to start" in capsys.readouterr().out
    assert {name: files(runs[name]) for name in untouched} == untouched  # not retrained
    assert summarize(stopped).status == "finished"
    assert without_clock(read_metrics(stopped)) == metrics  # resumed exactly
    assert (out / "sweep.csv").read_bytes() == before_csv  # the table rebuilt, identical

    # The same OUT with another grid is another sweep: refused, nothing changed.
    other = sweep_args(out, "--grid", "training.sigma=0.05,0.2", "--seeds", "2")
    assert cli.main(other) == 2
    assert "holds another sweep" in error(capsys)
    assert yaml.safe_load((out / "sweep.yaml").read_text()) == record


@pytest.mark.parametrize("extra, message", [
    (["--grid", "training.sigam=0.05,0.1"], "Did you mean 'training.sigma'"),
    (["--grid", "training.population_size=8,lots"], "expects int"),
    (["--grid", "training.population_size=8,9"], "even"),
    (["--grid", "training.sigma=0.1,0.10"], "twice"),
    (["--grid", "training.seed=1,2"], "--seeds N"),
    (["--grid", "logging.log_every=1,2"], "does not change what meta-training computes"),
    (["--grid", "training.sigma"], "KEY=V1,V2"),
    (["--grid", "training.sigma=0.1", "--grid", "training.sigma=0.2"], "given twice"),
    (["--seeds", "0"], "--seeds must be"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--cpus-per-trial", "4096"], "more than the"),
    (["--workers", "0"], "at least 1"),
])
def test_bad_sweep_inputs_stop_before_ray(tmp_path, capsys, extra, message):
    out = tmp_path / "sweep"
    assert cli.main(sweep_args(out, *extra)) == 2
    assert message in error(capsys)
    assert not out.exists()  # nothing written
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


def test_out_must_be_new_or_this_sweep(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main(sweep_args(foreign, "--grid", "training.sigma=0.05,0.1")) == 2
    assert "holds no vsml-es sweep" in error(capsys)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    afile = tmp_path / "file"
    afile.write_text("")
    assert cli.main(sweep_args(afile)) == 2
    assert "is a file" in error(capsys)


def test_grid_values_are_yaml_lists_and_name_the_run_directories():
    grid = parse_grid(["model.hidden_layers=[],[4, 2]", "training.learning_rate=1e-3,0.05"])
    assert grid == {"model.hidden_layers": [[], [4, 2]],
                    "training.learning_rate": ["1e-3", 0.05]}
    canonical, points = grid_points(load_config(QUICKSTART), grid)
    assert canonical["training.learning_rate"] == [0.001, 0.05]  # as the config reads them
    assert [p.slug for p in points] == [
        "hidden_layers_none-learning_rate_0.001", "hidden_layers_none-learning_rate_0.05",
        "hidden_layers_4_2-learning_rate_0.001", "hidden_layers_4_2-learning_rate_0.05"]
    assert points[2].config.model.hidden_layers == (4, 2)
