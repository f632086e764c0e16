"""docs/architecture.md's worked example, executed as written: a learner and a dataset of our
own, registered from outside the package, meta-trained for 2 generations and meta-tested."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vsml_es.data import registry
from vsml_es.learners import LEARNERS
from vsml_es.methods import METHODS
from vsml_es.storage.checkpoint import checkpoint_dirs, read_checkpoint

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def worked_example(heading: str = "## Worked example\n") -> str:
    section = DOC.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        namespace: dict = {"__name__": "worked_example"}
        exec(compile(worked_example(), str(DOC), "exec"), namespace)
    finally:  # the registries are global: leave them as the other tests expect
        LEARNERS.pop("prototypes", None)
        registry._SPECS.pop("blobs", None)
    result = namespace["result"]
    run_dir = tmp_path / "runs" / "prototypes-demo"
    assert result.run_dir == Path("runs/prototypes-demo") and result.generation == 2
    assert [g for g, _ in checkpoint_dirs(run_dir)] == [2]
    assert (run_dir / "params.npz").is_file() and (run_dir / "metatest" / "table.md").is_file()
    # Two generations moved the prototype learner's meta-parameters off their start.
    assert set(result.params) == {"log_temperature", "forget_logit"}
    assert float(result.params["forget_logit"]) != 3.0
    methods = [row["method"] for row in result.summaries]
    assert methods[0] == "Prototypes" and methods[1].startswith("SGD linear (lr")
    printed = capsys.readouterr().out
    assert "Prototypes" in printed and "blobs:test" in (run_dir / "metatest/table.md").read_text()
    # Blobs are easy: the running class means predict far above chance (25%) late in episodes.
    prototypes = result.summaries[0]
    assert prototypes["acc_last_quarter"] > 0.6, prototypes
    assert np.isfinite(prototypes["mean_loss"])


def test_the_method_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """A method added from outside the package: one class, one registry line, and the
    trainer, checkpoints and metrics serve it unchanged."""
    monkeypatch.chdir(tmp_path)
    try:
        namespace: dict = {"__name__": "method_example"}
        exec(compile(worked_example("## Worked example: a method\n"), str(DOC), "exec"),
             namespace)
    finally:
        METHODS.pop("hill", None)
    result = namespace["result"]
    run_dir = tmp_path / "runs" / "hill-demo"
    assert result.generation == 3 and (run_dir / "params.npz").is_file()
    assert [g for g, _ in checkpoint_dirs(run_dir)] == [3]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert all(r["kept"] in (0, 1) for r in rows) and "fitness_mean" in rows[0]
    printed = capsys.readouterr().out
    assert printed.strip().endswith(f"3 {result.final_fitness}")
    state = read_checkpoint(run_dir / "checkpoints" / "gen-000003").arrays
    flat = np.concatenate([np.ravel(v) for v in result.params.values()])
    assert any(np.array_equal(v, flat) for v in state.values())  # the state is the mean
