"""Ray evaluation against a real Ray: the embedded default, a two-node cluster on loopback and
a worker SIGKILLed mid-generation. Every run must end with the in-process run's
meta-parameters, bit for bit. Every Ray process a test starts is stopped by its fixture.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# Before Ray is imported anywhere in this process: localhost stays 127.0.0.1 (Ray would
# otherwise rewrite it to this machine's network address), and the test cluster gets a
# private auth token.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pytest  # noqa: E402

from vsml_es import cli, distributed  # noqa: E402
from vsml_es.distributed import ClusterError, RayEvaluator, WorkerError, plan_shards  # noqa: E402
from vsml_es.evaluator import build_eval_spec  # noqa: E402
from vsml_es.experiment import load_experiment  # noqa: E402
from vsml_es.storage.params import load_params  # noqa: E402
from vsml_es.trainer import Trainer  # noqa: E402

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = [
    "training.population_size=8",
    "training.eval_chunk=2",  # 4 antithetic pairs: up to 4 shards of one chunk each
    "training.generations=3",
    "task.episode_length=24",
    "checkpoint.every=100",
    "logging.progress=false",
]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
RAY_NAMES = ("raylet", "gcs_server", "ray::", "plasma", "dashboard", "monitor.py")


def sets(extra: list[str] = ()) -> list[str]:
    return [arg for kv in [*TINY, *extra] for arg in ("--set", kv)]


def train(run_dir: Path, *flags: str) -> int:
    return cli.main(["train", EXPERIMENT, *sets(), "--run-dir", str(run_dir), "--no-metatest",
                     *flags])


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    return load_params(run_dir / "params.npz")[0]  # the metadata holds the (differing) config


def assert_same_params(run_dir: Path, reference: dict[str, np.ndarray]) -> None:
    params = final_params(run_dir)
    assert params.keys() == reference.keys()
    for key, value in reference.items():
        np.testing.assert_array_equal(params[key], value, err_msg=key, strict=True)


def ray_processes(pids: set[int] | None = None) -> list[psutil.Process]:
    """Live (not zombie) Ray processes among ``pids``, or among this process's descendants."""
    if pids is None:
        pids = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE and any(
                    n in " ".join(p.cmdline()) or n in p.name() for n in RAY_NAMES):
                found.append(p)
        except psutil.Error:
            continue
    return found


def listeners(pids: set[int]) -> list[tuple[str, int, str]]:
    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.append((conn.laddr.ip, conn.laddr.port, psutil.Process(conn.pid).name()))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The in-process run that every Ray run must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("inprocess")
    assert train(run_dir, "--workers", "0") == 0
    return final_params(run_dir)


# --------------------------------------------------------------------------------------------
# A real two-node cluster on this machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(temp_dir: str) -> None:
    """Stop exactly the processes of this cluster (never 'ray stop': it stops every Ray)."""
    roots = [p for p in psutil.process_iter(["cmdline"])
             if temp_dir in " ".join(p.info["cmdline"] or [])]
    procs = set(roots)
    for p in roots:
        try:
            procs.update(p.children(recursive=True))
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    assert not ray_processes({p.pid for p in procs}), "a Ray process of the test cluster survived"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Head (1 CPU) + a second node (2 CPUs, a custom resource), both on 127.0.0.1."""
    ray_cli = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths < 108
    port = _free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # allows a second node
    common = ["--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
              "--disable-usage-stats"]
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1",
                        "--include-dashboard=false", f"--temp-dir={temp_dir}", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2",
                        '--resources={"second_node": 1}', *common],
                       env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_two_node_cluster_through_cli_gives_in_process_params(
    cluster: str, reference: dict[str, np.ndarray], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert train(tmp_path, "--ray-address", cluster, "--workers", "2") == 0
    assert "2 Ray worker(s) on 2 node(s)" in capsys.readouterr().out
    assert_same_params(tmp_path, reference)


def test_compare_runs_on_ray_embedded_or_cluster_with_in_process_results(
    cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """``compare`` evaluates on the embedded Ray by default and on a cluster with
    --ray-address, and its table is the in-process one, number for number."""
    compare = ["compare", EXPERIMENT, *sets(["compare.learners=[vsml, hebbian]",
                                             "metatest.baselines=[sgd]", "metatest.steps=12",
                                             "metatest.episodes=4", "training.generations=2",
                                             "metatest.sgd_tuning_episodes=2",
                                             "metatest.datasets=[digits:test]"])]
    tables = {}
    for name, flags in (("local", ["--workers", "0"]), ("embedded", []),
                        ("cluster", ["--ray-address", cluster, "--workers", "2"])):
        assert cli.main([*compare, "--out", str(tmp_path / name), *flags]) == 0
        printed = capsys.readouterr().out
        if name == "local":
            assert "Ray worker" not in printed
        else:  # one line per meta-learner: each trained on Ray actors
            where = "2 Ray worker(s) on 2 node(s)" if name == "cluster" else "private Ray"
            assert printed.count("evaluating on") == 2 and where in printed, printed
        tables[name] = (tmp_path / name / "metatest" / "table.md").read_text()
    assert tables["embedded"] == tables["local"] == tables["cluster"]


class _KillOnce(RayEvaluator):
    """SIGKILLs the worker process that was just sent a shard of generation 1."""

    killed: list[int] = []

    def _dispatch(self, gen: distributed._Generation) -> None:
        before = {i for i, s in enumerate(self.slots) if s.state == "busy"}
        super()._dispatch(gen)
        if gen.generation == 1 and not self.killed:
            for i, slot in enumerate(self.slots):
                if slot.state == "busy" and i not in before:
                    os.kill(slot.info["pid"], signal.SIGKILL)
                    self.killed.append(slot.info["pid"])
                    return


def test_sigkill_of_a_worker_mid_generation_changes_nothing(
    cluster: str, reference: dict[str, np.ndarray], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The re-send path alone: a backup copy (tests/test_scale.py) could otherwise answer for
    # the killed worker before Ray reports its death.
    config = load_experiment(EXPERIMENT, [*TINY, f"distributed.address={cluster}",
                                      "distributed.workers=2", "distributed.backup_after=0"])
    with distributed.ray_session(config.distributed):
        spec, data = build_eval_spec(config)
        evaluator = _KillOnce(spec, data, config.distributed)
        try:
            Trainer(config, tmp_path, evaluator=evaluator, spec=spec, data=data).run()
            status = evaluator.status()
        finally:
            evaluator.close()
    assert evaluator.killed, "no worker was killed"
    assert not psutil.pid_exists(evaluator.killed[0]) or (
        psutil.Process(evaluator.killed[0]).status() == psutil.STATUS_ZOMBIE)
    assert status["resent"] >= 1
    assert "re-sending" in capsys.readouterr().err
    assert_same_params(tmp_path, reference)


def test_a_shard_failing_on_every_try_stops_the_run_after_bounded_retries(
    cluster: str, tmp_path: Path
) -> None:
    config = load_experiment(EXPERIMENT, [*TINY, f"distributed.address={cluster}",
                                      "distributed.workers=1", "distributed.max_retries=1",
                                      "distributed.shard_timeout_s=0.2"])
    with distributed.ray_session(config.distributed):
        spec, data = build_eval_spec(config)
        # The worker sleeps 999x its evaluation after each shard, so every try outlasts the
        # timeout however fast the evaluation is (a warm compilation cache makes it ms).
        evaluator = RayEvaluator(spec, data, config.distributed, slowdown={0: 1000.0})
        try:
            trainer = Trainer(config, tmp_path, evaluator=evaluator, spec=spec, data=data)
            with pytest.raises(WorkerError, match="failed 2 times"):
                trainer.step(trainer.initial_state())
        finally:
            evaluator.close()


def test_more_gpus_than_the_cluster_has_is_reported_not_waited_for(cluster: str) -> None:
    config = load_experiment(EXPERIMENT, [*TINY, f"distributed.address={cluster}",
                                      "distributed.gpus_per_worker=1",
                                      "distributed.startup_timeout_s=1"])
    started = time.monotonic()
    with distributed.ray_session(config.distributed):
        spec, data = build_eval_spec(config)
        with pytest.raises(ClusterError, match=r"1 GPU\(s\).*0 GPU\(s\)"):
            RayEvaluator(spec, data, config.distributed)
    assert time.monotonic() - started < 120  # bounded by startup_timeout_s, not forever


# --------------------------------------------------------------------------------------------
# The embedded default


def test_embedded_default_listens_on_loopback_only_and_leaves_nothing_behind(
    reference: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, int, str]] = []
    evaluate = RayEvaluator._run  # behind evaluate and evaluate_asked alike

    def spy(self: RayEvaluator, *args: object) -> object:
        if not seen:  # while Ray and its workers are up: every listener of this process tree
            me = psutil.Process()
            seen.extend(listeners({me.pid, *(p.pid for p in me.children(recursive=True))}))
        return evaluate(self, *args)

    monkeypatch.setattr(RayEvaluator, "_run", spy)
    assert train(tmp_path) == 0  # no --ray-address, no --workers: the embedded Ray
    assert seen, "found no listening socket of the embedded Ray"
    assert {ip for ip, _, _ in seen} <= LOOPBACK, seen
    assert_same_params(tmp_path, reference)
    deadline = time.monotonic() + 15
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(), "Ray processes outlived 'vsml-es train'"


def test_ctrl_c_checkpoints_and_stops_every_ray_process(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: Ray's own processes included.
    The run has a user's environment (no RAY_AUTH_* variables), where Ray announces token
    authentication on every start; for the private, loopback-only Ray that is noise, and
    vsml-es drops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    command = [shutil.which("vsml-es") or sys.executable, *([] if shutil.which("vsml-es") else
               ["-m", "vsml_es.cli"]), "train", EXPERIMENT, *sets(["training.generations=50"]),
               "--run-dir", str(tmp_path), "--no-metatest"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group, like a shell job
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "metrics.jsonl").exists() or not (
                tmp_path / "metrics.jsonl").read_text().strip():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no generation finished"
            time.sleep(0.2)
        tree = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert ray_processes(tree), "the embedded Ray is not running under the driver"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = (b.decode() for b in proc.communicate(timeout=120))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Resume with" in err
    assert list((tmp_path / "checkpoints").iterdir())
    assert "private Ray" in out
    assert "Token authentication" not in err + out
    deadline = time.monotonic() + 15
    while ray_processes(tree) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(tree), "Ray processes outlived the interrupted driver"


# --------------------------------------------------------------------------------------------
# Bad input: clear and early


def test_unreachable_address_fails_within_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    assert train(Path(tempfile.mkdtemp()) / "run", "--ray-address", address) == 2
    err = capsys.readouterr().err
    assert "Cannot reach the Ray head" in err and address in err
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("flags, message", [
    (["--workers", "-1"], "distributed.workers"),
    (["--workers", "0", "--ray-address", "auto"], "in-process"),
    (["--ray-address", "nohost"], "HOST:PORT"),
])
def test_bad_cluster_flags_are_config_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(Path(tempfile.mkdtemp()) / "run", *flags) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Shards


@pytest.mark.parametrize("population, shards, chunk", [
    (8, 2, 2), (64, 2, 32), (64, 3, 16), (10, 4, 3), (6, 9, 4), (64, 1, 16)])
def test_shards_keep_antithetic_pairs_and_cover_every_member_once(
    population: int, shards: int, chunk: int
) -> None:
    ids = np.arange(population) % (population // 2)
    plan = plan_shards(ids, shards, chunk)
    assert 1 <= len(plan) <= shards
    members = np.concatenate(plan)
    np.testing.assert_array_equal(np.sort(members), np.arange(population))
    for shard in plan:
        for i in shard:  # the partner of every member is in the same shard
            assert (i + population // 2) % population in shard
    if chunk % 2 == 0 and len(plan) > 1:
        assert all(len(s) % chunk == 0 for s in plan[:-1])  # whole chunks: no padding
