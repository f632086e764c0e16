"""Checkpoints and exact resume, end to end through the real CLI.

One uninterrupted reference run per module; every interrupted run (SIGKILL of a real
``vsml-es train`` process, SIGTERM/SIGINT, corrupt or half-written checkpoints) is resumed and
must end with meta-parameters, ES state and metrics identical to it, bit for bit. Only the two
wall-clock columns of the metrics log (``seconds``, ``wall_time``) are excluded.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vsml_es import cli
from vsml_es.signals import GenerationAbandoned, StopSignals
from vsml_es.storage.checkpoint import (
    CHECKPOINTS,
    MANIFEST,
    checkpoint_dirs,
    latest_checkpoint,
    read_checkpoint,
)

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
GENERATIONS = 16
TRAIN_SET = [
    "training.population_size=8",
    "training.eval_chunk=8",
    "task.episode_length=16",
    f"training.generations={GENERATIONS}",
    "checkpoint.every=3",
    "checkpoint.keep=2",
    "logging.progress=false",
    "distributed.workers=0",  # in-process evaluation (one test below uses Ray)
]
TIMING = ("seconds", "wall_time")  # wall-clock columns: never reproducible


def sets(extra: list[str] = ()) -> list[str]:
    return [arg for kv in [*TRAIN_SET, *extra] for arg in ("--set", kv)]


def train(run_dir: Path, *extra: str) -> int:
    return cli.main(["train", EXPERIMENT, *sets(), "--run-dir", str(run_dir), "--no-metatest",
                     *extra])


def resume(run_dir: Path, *extra: str) -> int:
    return cli.main(["resume", str(run_dir), "--no-metatest", *extra])


def metric_rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def final_arrays(run_dir: Path, generation: int = GENERATIONS) -> dict[str, np.ndarray]:
    """Mean params (params.npz) and the full ES state of the final checkpoint."""
    with np.load(run_dir / "params.npz", allow_pickle=False) as z:
        arrays = {f"params/{k}": z[k] for k in z.files if k != "__meta_json__"}
    ckpt = read_checkpoint(run_dir / CHECKPOINTS / f"gen-{generation:06d}")
    arrays.update({f"ckpt/{k}": v for k, v in ckpt.arrays.items()})
    return arrays


def assert_same_run(run_dir: Path, reference: Path, generations: int = GENERATIONS) -> None:
    assert metric_rows(run_dir) == metric_rows(reference)
    assert csv_rows(run_dir) == csv_rows(reference)
    got, want = final_arrays(run_dir, generations), final_arrays(reference, generations)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].tobytes() == want[name].tobytes(), name  # bit for bit


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ckpt") / "reference"
    assert train(run_dir) == 0
    return run_dir


def copy_run(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    return run_dir


def newest(run_dir: Path) -> Path:
    return checkpoint_dirs(run_dir)[-1][1]


# --------------------------------------------------------------------------------------------
# What a checkpoint holds; retention


def test_checkpoint_contents_and_retention(reference: Path) -> None:
    # Saved at 3, 6, ..., 15 (every 3) and 16 (the end); keep=2 keeps 15 and 16 plus the one
    # with the lowest mean population fitness.
    rows = {r["generation"] + 1: r["fitness_mean"] for r in metric_rows(reference)}
    best = min([*range(3, GENERATIONS, 3), GENERATIONS], key=lambda g: (rows[g], -g))
    assert {g for g, _ in checkpoint_dirs(reference)} == {15, 16, best}
    ckpt = latest_checkpoint(reference)
    assert ckpt is not None and ckpt.generation == GENERATIONS
    meta = ckpt.meta
    assert meta["config"]["training"]["generations"] == GENERATIONS
    assert set(meta["versions"]) >= {"jax", "evosax", "vsml_es"}
    assert meta["metrics_position"] == {
        "metrics.jsonl": (reference / "metrics.jsonl").stat().st_size,
        "metrics.csv": (reference / "metrics.csv").stat().st_size,
    }
    assert meta["fitness"] == rows[GENERATIONS]
    assert ckpt.arrays["rng_key_data"].dtype == np.uint32
    assert {s["path"] for s in meta["es_state"]} >= {".mean", ".opt_state[0].mu"}
    manifest = json.loads((ckpt.path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"state.npz", "meta.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert not list((reference / CHECKPOINTS).glob(".*"))  # no temporary leftovers


# --------------------------------------------------------------------------------------------
# SIGKILL of a real `vsml-es train` process at a random moment, then resume


def subprocess_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Persistent XLA cache: only the first process compiles (same executables either way).
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", RAY_USAGE_STATS_ENABLED="0")
    return env


def vsml_es_command() -> list[str]:
    script = shutil.which("vsml-es")
    return [script] if script else [sys.executable, "-m", "vsml_es.cli"]


def kill_during_training(run_dir: Path, rows: int, delay: float, env: dict[str, str],
                         command: list[str]) -> None:
    """Start ``command``, wait for ``rows`` metric rows plus ``delay`` seconds, SIGKILL it."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= rows:
            break
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended (code {proc.returncode}) before it could be killed:\n{err.decode()}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_random_moment_then_resume_is_bit_identical(
    seed: int, reference: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = np.random.default_rng(seed)
    env = subprocess_env(tmp_path_factory.getbasetemp() / "jax-cache")
    run_dir = tmp_path / "run"
    rows = int(rng.integers(1, GENERATIONS - 5))
    # Seed 1 is evaluated by a Ray worker and resumed in-process: the evaluator is a safe
    # change and gives identical fitness.
    workers = ["--workers", "1"] if seed == 1 else []
    command = [*vsml_es_command(), "train", EXPERIMENT, *sets(), *workers, "--run-dir",
               str(run_dir), "--no-metatest"]
    kill_during_training(run_dir, rows, float(rng.uniform(0, 0.05)), env, command)
    if seed == 2:  # killed twice: the resumed process is killed too
        done = len(metric_rows(run_dir))
        rows = int(rng.integers(done + 1, GENERATIONS - 2))
        resume_cmd = [*vsml_es_command(), "resume", str(run_dir), "--no-metatest"]
        kill_during_training(run_dir, rows, float(rng.uniform(0, 0.05)), env, resume_cmd)
    assert not (run_dir / "params.npz").exists()
    assert resume(run_dir, "--workers", "0") == 0
    assert "resuming from generation" in capsys.readouterr().out or not checkpoint_dirs(run_dir)
    assert_same_run(run_dir, reference)


# --------------------------------------------------------------------------------------------
# SIGTERM / SIGINT: finish (or abandon) the generation in flight, checkpoint, exit cleanly


def signal_after_rows(run_dir: Path, rows: int, signals: list[int]) -> threading.Thread:
    def send() -> None:
        log = run_dir / "metrics.jsonl"
        while not (log.exists() and len(log.read_text().splitlines()) >= rows):
            time.sleep(0.002)
        for sig in signals:
            os.kill(os.getpid(), sig)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signals,code", [([signal.SIGTERM], 143),
                                          ([signal.SIGINT, signal.SIGINT], 130)])
def test_signal_checkpoints_and_exits_cleanly(
    signals: list[int], code: int, reference: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = tmp_path / "run"
    thread = signal_after_rows(run_dir, 4, signals)
    assert train(run_dir) == code
    thread.join()
    err = capsys.readouterr().err
    name = signal.Signals(signals[0]).name
    assert f"stopped by {name} after generation" in err
    assert f"Resume with: vsml-es resume {run_dir}" in err
    stopped = latest_checkpoint(run_dir)
    assert stopped is not None and 4 <= stopped.generation < GENERATIONS
    assert len(metric_rows(run_dir)) == stopped.generation  # log and checkpoint agree
    assert not (run_dir / "params.npz").exists()
    if signals[0] == signal.SIGTERM:  # (SIGKILL above covers resuming after the others)
        assert resume(run_dir) == 0
        assert_same_run(run_dir, reference)


def test_second_signal_abandons_only_inside_a_generation() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs the handler at the next bytecode
        assert stop.requested == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # outside: never interrupts logging/checkpoints
        time.sleep(0.01)
        with pytest.raises(GenerationAbandoned):
            with stop.abandonable():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------------------------
# Corrupt, truncated and half-written checkpoints


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def damage(checkpoint: Path, how: str) -> None:
    if how == "truncate state.npz":
        with open(checkpoint / "state.npz", "r+b") as f:
            f.truncate(f.seek(0, 2) // 3)
    elif how == "no manifest":  # as if killed before the manifest was written
        (checkpoint / MANIFEST).unlink()
    elif how == "missing meta.json":
        (checkpoint / "meta.json").unlink()
    else:
        flip_byte(checkpoint / how)


@pytest.mark.parametrize("how,reasons", [
    ("state.npz", ["state.npz does not match its SHA-256"]),
    ("meta.json", ["meta.json does not match its SHA-256"]),
    # A flipped manifest byte breaks its JSON, its structure, or a hash or size it records.
    ("MANIFEST.json", ["MANIFEST.json is unreadable", "does not match its SHA-256",
                       "the manifest says", "does not list files as name: {sha256, size}",
                       "is not a vsml-es-checkpoint manifest"]),
    ("truncate state.npz", ["state.npz has ", "bytes, the manifest says"]),
    ("no manifest", ["no MANIFEST.json (it was not completely written)"]),
    ("missing meta.json", ["meta.json is missing"]),
])
def test_each_damaged_file_is_detected_and_the_previous_checkpoint_chosen(
    how: str, reasons: list[str], reference: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(reference, tmp_path)
    bad = newest(run_dir)
    damage(bad, how)
    messages: list[str] = []
    chosen = latest_checkpoint(run_dir, messages.append)
    assert chosen is not None and chosen.generation == 15
    assert messages[0].startswith(f"warning: checkpoint {bad} is unusable: ")
    assert any(reason in messages[0] for reason in reasons), messages[0]
    assert messages[1] == f"using the previous valid checkpoint {chosen.path} (generation 15)."


def test_resume_after_a_truncated_newest_checkpoint_is_bit_identical(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = copy_run(reference, tmp_path)
    (run_dir / "params.npz").unlink()
    bad = newest(run_dir)
    damage(bad, "truncate state.npz")
    assert resume(run_dir) == 0
    err = capsys.readouterr().err
    assert f"warning: checkpoint {bad} is unusable" in err
    assert "using the previous valid checkpoint" in err
    assert "set the unusable checkpoint aside as" in err
    assert len(list((run_dir / CHECKPOINTS).glob(".corrupt-gen-000016-*"))) == 1
    assert_same_run(run_dir, reference)


def test_every_checkpoint_corrupt_restarts_from_scratch_only_when_asked(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(reference, tmp_path)
    for _, path in checkpoint_dirs(run_dir):
        flip_byte(path / "state.npz")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert resume(run_dir) == 2  # it would lose the run's progress: refused without --restart
    assert "Add --restart" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert resume(run_dir, "--restart") == 0
    err = capsys.readouterr().err
    assert "no valid checkpoint" in err and "starting again from generation 0" in err
    assert_same_run(run_dir, reference)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_generation_0(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a kill during Ray start-up leaves: the run marker, the resolved config, nothing else.
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    shutil.copy(reference / "config.yaml", run_dir / "config.yaml")
    assert resume(run_dir) == 2  # without the marker it may be the user's own config.yaml
    assert "holds no vsml-es run" in capsys.readouterr().err
    shutil.copy(reference / ".vsml-es-run", run_dir / ".vsml-es-run")
    assert resume(run_dir) == 0
    assert "starting again from generation 0" in capsys.readouterr().err
    assert_same_run(run_dir, reference)


# --------------------------------------------------------------------------------------------
# Config changes and versions


def test_changed_config_is_refused_with_every_difference(
    reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = metric_rows(reference)
    code = resume(reference, "--set", "training.sigma=0.2", "--set", "task.episode_length=20",
                  "--set", "training.generations=20")
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Cannot resume" in err and "changed config" in err
    assert "training.sigma: 0.1 (run) -> 0.2 (now)" in err
    assert "task.episode_length: 16 (run) -> 20 (now)" in err
    assert "training.generations" not in err.split("Only these")[0]  # a safe key: not listed
    assert "Only these may change on resume: name, training.generations, logging.*" in err
    assert metric_rows(reference) == before  # nothing touched


def test_train_resume_with_experiment_file_checks_it_too(
    reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["train", EXPERIMENT, *sets(["training.seed=5"]), "--resume",
                     str(reference), "--no-metatest"])
    assert code == 2
    assert "training.seed: 0 (run) -> 5 (now)" in " ".join(capsys.readouterr().err.split())


def test_safe_changes_are_allowed_and_keep_the_result(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(reference, tmp_path)
    shutil.rmtree(newest(run_dir))  # resume from generation 15
    (run_dir / "params.npz").unlink()
    leftover = run_dir / CHECKPOINTS / ".tmp-gen-000016-abc"  # a save killed half-way
    leftover.mkdir()
    (leftover / "state.npz").write_bytes(b"half")
    code = cli.main(["train", "--resume", str(run_dir), "--no-metatest", *sets([
        "checkpoint.every=1", "checkpoint.keep=1", "logging.log_every=1", "name=renamed",
        "metatest.episodes=8"])])
    assert code == 0
    err = capsys.readouterr().err
    assert "resuming with checkpoint.every changed: 3 -> 1" in err
    assert_same_run(run_dir, reference)
    assert not leftover.exists()
    # Training longer continues the same trajectory: it ends where a run asked for the longer
    # budget from the start ends, bit for bit (recipes extend finished phases this way).
    longer = GENERATIONS + 2
    assert resume(run_dir, "--set", f"training.generations={longer}") == 0
    assert metric_rows(run_dir)[:GENERATIONS] == metric_rows(reference)
    assert len(metric_rows(run_dir)) == longer
    straight = tmp_path / "straight"
    assert cli.main(["train", EXPERIMENT, *sets([f"training.generations={longer}"]),
                     "--run-dir", str(straight), "--no-metatest"]) == 0
    assert_same_run(run_dir, straight, longer)


def test_version_mismatch_warns(reference: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vsml_es.resume as resume_module

    real = resume_module.versions()
    monkeypatch.setattr(resume_module, "versions", lambda: {**real, "jax": "0.0.1"})
    messages: list[str] = []
    plan = resume_module.plan_resume(reference, report=messages.append)
    assert plan.checkpoint is not None and plan.checkpoint.generation == GENERATIONS
    assert messages == [
        f"warning: the checkpoint was written with jax {real['jax']}, this is 0.0.1; the "
        "resumed run may differ in the last bits from an uninterrupted one."
    ]


def test_resume_beyond_generations_and_missing_runs_are_clear_errors(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resume(reference, "--set", "training.generations=10") == 2
    assert "already at generation 16" in capsys.readouterr().err
    assert resume(tmp_path / "nope") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert resume(tmp_path / "empty") == 2
    # The message is wrapped to the terminal width, so a long path can move the line break.
    assert "holds no vsml-es run to resume" in " ".join(capsys.readouterr().err.split())
    assert train(reference) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"'{reference}' already holds a run. Continue it with 'vsml-es resume" in err
    assert cli.main(["train"]) == 2
    assert "Give an experiment file" in capsys.readouterr().err
