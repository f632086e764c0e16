"""The short meta-training recipe's run.sh: each phase starts from the one before, a rerun
continues instead of starting over, and the result is a learner file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsml_es.runs import load_run_config
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.storage.params import load_params

RECIPE = Path(__file__).parents[1] / "experiments" / "generalization_fast"
# Every phase's settings shrunk to seconds; the chaining is what is under test.
SMALL = ["training.generations=2", "task.episode_length=10", "logging.progress=false",
         "checkpoint.every=1"]


def run_recipe(runs: Path, bin_dir: Path, seed: int = 3) -> subprocess.CompletedProcess:
    flags = [arg for kv in SMALL for arg in ("--set", kv)]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", str(RECIPE / "run.sh"), str(seed), str(runs), *flags],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def vsml_es_bin(tmp_path_factory) -> Path:
    """A ``vsml-es`` on PATH that is this interpreter's package, installed or not."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "vsml-es"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vsml_es.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def assert_learner_holds(learner: Path, params: dict[str, np.ndarray]) -> None:
    exported = read_learner_file(learner)[0]
    assert exported.keys() == params.keys()
    assert all(np.array_equal(exported[k], params[k]) for k in params)


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_sh_chains_the_phases_and_continues_where_it_stopped(tmp_path, vsml_es_bin):
    proc = run_recipe(tmp_path, vsml_es_bin)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "generalization_fast-seed3"
    for phase in (2, 3):  # warm-started from the previous phase's final parameters
        config = load_run_config(out / f"phase{phase}")
        assert config["training"]["init_params"] == str(out / f"phase{phase - 1}" / "params.npz")
        assert config["training"]["seed"] == 3
    assert load_run_config(out / "phase3")["task"]["mixture"][-1] == "linear_teacher"
    learner = out / "generalization_fast-seed3.vsml"
    final = load_params(out / "phase3" / "params.npz")[0]
    assert_learner_holds(learner, final)

    before = snapshot(tmp_path)
    again = run_recipe(tmp_path, vsml_es_bin)  # everything done: nothing is redone or rewritten
    assert again.returncode == 0, again.stderr[-3000:]
    assert [line for line in again.stdout.splitlines() if line.startswith("phase")] == [
        f"phase {p}: done ({out / f'phase{p}'})" for p in (1, 2, 3)]
    assert snapshot(tmp_path) == before

    # A phase stopped after its last checkpoint but before its final parameters: the rerun
    # resumes it (not a fresh start) and ends on the very same parameters.
    (out / "phase3" / "params.npz").unlink()
    learner.unlink()
    resumed = run_recipe(tmp_path, vsml_es_bin)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"phase 3: resuming {out / 'phase3'}" in resumed.stdout
    assert snapshot(out / "phase3").get(out / "phase3" / "params.npz") == \
        before[out / "phase3" / "params.npz"]
    assert_learner_holds(learner, final)


@pytest.mark.parametrize("args", [[], ["zero"], ["0", "--set", "training.generations=2"]])
def test_run_sh_refuses_bad_arguments_before_any_work(tmp_path, args):
    proc = subprocess.run(["bash", str(RECIPE / "run.sh"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "usage: run.sh SEED [RUNS_DIR]" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no runs directory made
