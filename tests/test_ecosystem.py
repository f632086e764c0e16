"""Researchers' tools: TensorBoard and W&B (offline) tracking that resumes without duplicate
steps, meta-training plots, ``vsml-es runs`` and ``vsml-es plot``."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from tensorboardX.proto import event_pb2

from vsml_es import cli
from vsml_es.runs import read_metrics, seed_groups, summarize
from vsml_es.storage.checkpoint import checkpoint_dirs

QUICKSTART = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = ["training.population_size=8", "training.eval_chunk=8", "training.generations=4",
        "task.episode_length=8", "checkpoint.every=2", "logging.progress=false",
        "distributed.workers=0"]
PNG = b"\x89PNG\r\n\x1a\n"


def sets(extra: list[str] = ()) -> list[str]:
    return [arg for kv in [*TINY, *extra] for arg in ("--set", kv)]


def tensorboard_scalars(logdir: Path, tag: str) -> dict[int, float]:
    """What TensorBoard shows for ``tag``: the event files in order, a START session log at
    step s discarding the values at steps >= s (tensorboardX's purge_step)."""
    values: dict[int, float] = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                values = {s: v for s, v in values.items() if s < event.step}
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return values


def test_tensorboard_and_wandb_resume_without_duplicate_steps(tmp_path, monkeypatch, capsys):
    import wandb.sdk.wandb_run as wandb_run

    logged: list[int] = []
    real_log = wandb_run.Run.log

    def spy(self, data, step=None, **kwargs):
        if any(key.startswith("fitness/") for key in data):
            logged.append(step)
        return real_log(self, data, step=step, **kwargs)

    monkeypatch.setattr(wandb_run.Run, "log", spy)
    monkeypatch.setenv("WANDB_SILENT", "true")
    # tensorboardX names event files by the second: freeze its clock so the resume below
    # always opens its file within the same second as the first session did.
    import types

    from tensorboardX import event_file_writer
    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: 1.8e9))
    run_dir = tmp_path / "run"
    tracking = ["logging.tensorboard=true", "logging.wandb={project: vsml-test, mode: offline}"]
    assert cli.main(["train", QUICKSTART, *sets(tracking), "--run-dir", str(run_dir),
                     "--no-metatest"]) == 0
    # Lose the newest checkpoint: the resume recomputes generations 2 and 3, bit for bit.
    shutil.rmtree(checkpoint_dirs(run_dir)[-1][1])
    assert cli.main(["resume", str(run_dir), "--no-metatest", "--set",
                     "training.generations=6"]) == 0
    rows = read_metrics(run_dir)
    assert [r["generation"] for r in rows] == list(range(6))
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    board = tensorboard_scalars(run_dir / "tensorboard", "fitness/mean")
    assert sorted(board) == list(range(6))  # each generation once, after the purge
    for row in rows:
        assert board[row["generation"]] == pytest.approx(row["fitness_mean"], rel=1e-6)
    assert logged == list(range(6))  # W&B: the recomputed steps 2, 3 were not sent again
    assert json.loads((run_dir / "wandb_step.json").read_text()) == {"step": 5}
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run_id = (run_dir / "wandb_id").read_text().strip()
    assert len(offline) == 2 and all(run_id in p.name and p.stat().st_size > 0 for p in offline)


def test_tracking_options_are_checked(capsys):
    code = cli.main(["config", "--set", "logging.wandb={mode: offline}"])
    assert code == 2 and "needs a project name" in capsys.readouterr().err
    code = cli.main(["config", "--set", "logging.wandb={project: p, mode: sometimes}"])
    assert code == 2 and "logging.wandb.mode" in capsys.readouterr().err


def test_runs_table_plots_and_seed_groups(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in (1, 2):
        assert cli.main(["train", QUICKSTART, *sets([f"training.seed={seed}"]), "--run-dir",
                         str(root / f"seed{seed}"), "--no-metatest"]) == 0
    assert cli.main(["train", QUICKSTART, *sets(["training.sigma=0.3"]), "--run-dir",
                     str(root / "wide"), "--no-metatest"]) == 0
    for name in ("seed1", "seed2", "wide"):  # every run leaves its own meta-training plot
        assert (root / name / "plots" / "meta_training.png").read_bytes().startswith(PNG)
    # A killed run (its process gone while it said "running") and a broken one.
    killed = root / "killed"
    shutil.copytree(root / "seed1", killed)
    status = json.loads((killed / "status.json").read_text())
    (killed / "status.json").write_text(json.dumps({**status, "state": "running",
                                                    "pid": 2**22 + 12345}))
    broken = root / "broken"
    broken.mkdir()
    shutil.copy(root / "seed1" / ".vsml-es-run", broken)  # a run vsml-es made, then damaged
    (broken / "config.yaml").write_bytes(b"\xff\xfe")
    capsys.readouterr()

    assert cli.main(["runs", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    states = {line.split()[0].rsplit("/", 1)[-1]: line for line in table[1:]}
    assert "finished" in states["seed1"] and "4/4" in states["seed1"]
    assert "interrupted" in states["killed"] and "corrupt" in states["broken"]
    assert summarize(root / "wide").best_fitness == min(
        r["fitness_mean"] for r in read_metrics(root / "wide"))

    groups = seed_groups([root / "seed1", root / "seed2", root / "wide"])
    assert sorted(len(g) for g in groups.values()) == [1, 2]
    assert any("training.sigma=0.3" in label for label in groups)
    out = tmp_path / "overlay.png"
    assert cli.main(["plot", str(root / "seed1"), str(root / "seed2"), str(root / "wide"),
                     "-o", str(out), "--metric", "fitness_mean"]) == 0
    assert out.read_bytes().startswith(PNG) and "2 run(s)" in capsys.readouterr().out
    assert cli.main(["plot", str(root / "seed1"), "-o", str(out)]) == 2  # exists: no overwrite
    assert "exists" in capsys.readouterr().err
