"""Online ES (training.method nres / pes) and every method on Ray workers.

The schedule and the estimators are checked directly; the distributed claims end to end:
a run with 2 Ray workers ends on the in-process run's parameters bit for bit, also when a
worker is SIGKILLed mid-window (its particles' states are rebuilt by replay) and when the
whole run is SIGKILLed and resumed; an imitation run on 2 workers equals its in-process run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_within, bound, lstm_updates, ops_per_update, scale_of
from test_checkpoint import kill_during_training, subprocess_env, vsml_es_command
from test_fused import built

from vsml_es import cli
from vsml_es.evaluator import build_eval_spec, online_pool
from vsml_es.experiment import load_experiment
from vsml_es.methods import build_method, initial_params
from vsml_es.online import Missing, OnlineSpec, lane_noise, particle_blocks

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
NRES = [
    "training.method=nres",
    "training.population_size=8",  # 4 particles
    "training.eval_chunk=4",  # 2 particles per compiled call: 2 blocks for 2 workers
    "task.episode_length=12",
    "training.window=3",  # 4 windows per stream: resets spread over the generations
    "training.generations=7",
    "checkpoint.every=2",
    "logging.progress=false",
]


def sets(overrides: list[str]) -> list[str]:
    return [arg for kv in overrides for arg in ("--set", kv)]


def train(run_dir: Path, overrides: list[str], *flags: str) -> int:
    return cli.main(["train", EXPERIMENT, *sets(overrides), "--run-dir", str(run_dir),
                     "--no-metatest", *flags])


def final_params(run_dir: Path) -> dict[str, bytes]:
    with np.load(run_dir / "params.npz", allow_pickle=False) as z:
        return {k: z[k].tobytes() for k in z.files if k != "__meta_json__"}


def metric_rows(run_dir: Path) -> list[dict]:
    import json

    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "wall_time")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def online_spec(overrides: list[str] = NRES) -> tuple[OnlineSpec, object, object, object]:
    config = load_experiment(EXPERIMENT, [*overrides, "distributed.workers=0"])
    spec, data = build_eval_spec(config)
    method = build_method(config, spec)
    return method.online, method, spec, data


# -- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("particles, windows", [(4, 4), (6, 4), (3, 8), (16, 40)])
def test_particles_are_evenly_staggered_and_reset_at_spread_generations(
    particles: int, windows: int
) -> None:
    o = OnlineSpec("nres", particles, 5, 5 * windows, 0.1, 0, 2, None)
    p = np.arange(particles)
    offsets = o.offset(p)
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= 0) and offsets[-1] < windows
    # Even spacing: neighbouring offsets differ by floor or ceil of windows / particles.
    gaps = np.diff(np.append(offsets, windows))
    assert set(gaps.tolist()) <= {windows // particles, -(-windows // particles)}
    # Every particle resets exactly once per n generations, and no generation sees more than
    # ceil(N / n) of the N particles reset (lockstep would reset all N together).
    resets = np.stack([o.position(p, g)[1] == 0 for g in range(3 * windows)])
    assert np.all(resets.reshape(3, windows, particles).sum(axis=1) == 1)
    assert resets.sum(axis=1).max() == -(-particles // windows)
    # The stream a particle is on changes exactly at its resets.
    streams = np.stack([o.position(p, g)[0] for g in range(3 * windows)])
    assert np.array_equal(np.diff(streams, axis=0) == 1, resets[1:])


def test_nres_keeps_one_direction_per_stream_and_pes_sums_its_windows() -> None:
    o, nres, _, _ = online_spec()
    o_pes, pes, _, _ = online_spec([*NRES, "training.method=pes"])
    p = np.arange(o.particles)
    n = o.windows_per_stream
    before = np.asarray(nres.directions(0))
    for g in range(1, 2 * n):
        now = np.asarray(nres.directions(g))
        reset = o.position(p, g)[1] == 0
        assert np.array_equal(now[~reset], before[~reset])  # reused within a stream
        assert not np.any(np.all(now[reset] == before[reset], axis=1))  # new at a reset
        before = now
    g = 2 * n + 1
    stream, window = o_pes.position(p, g)
    for i in p:
        first = stream[i] * n
        draws = lane_noise(o_pes.seed, np.full(window[i] + 1, i),
                           np.arange(first, first + window[i] + 1), o_pes.layout.size)
        np.testing.assert_allclose(np.asarray(pes.directions(g))[i],
                                   np.asarray(jnp.sum(draws, axis=0)), rtol=1e-6, atol=1e-5)


def test_shaped_differences_keep_their_order_and_sign_balance() -> None:
    from vsml_es.methods.online_es import shape_differences

    diff = np.asarray([0.3, -2.0, 0.01, 5.0, -0.1], np.float32)
    for shaping in ("centered_rank", "pair_rank"):
        ranks = shape_differences(diff, shaping)
        assert np.array_equal(np.argsort(ranks), np.argsort(diff))
        assert ranks.min() == -0.5 and ranks.max() == 0.5 and abs(ranks.sum()) < 1e-6
    z = shape_differences(diff, "z_score")
    assert np.allclose(z * np.std(diff), diff) and np.std(z) == pytest.approx(1.0)
    assert shape_differences(diff, "none") is diff


def test_particle_blocks_cover_each_particle_once_in_whole_chunks() -> None:
    o = OnlineSpec("nres", 7, 5, 20, 0.1, 0, 4, None)
    for workers in (1, 2, 3, 9):
        blocks = particle_blocks(o, workers)
        assert np.array_equal(np.concatenate(blocks), np.arange(7))
        assert all(len(b) % 2 == 0 for b in blocks[:-1])  # whole chunks of 2 particles
        assert len(blocks) <= workers


# -- the pool: states rebuilt by replay ------------------------------------------------------------


def test_a_pool_that_lost_its_states_rebuilds_them_bit_for_bit() -> None:
    """A pool run for several generations and a new pool (a restarted worker) given the
    history at the next generation answer with the same bits; without the history the new
    pool says what it misses and changes nothing."""
    o, method, spec, data = online_spec()
    state = method.init(initial_params(load_experiment(EXPERIMENT, NRES), spec))
    pool = online_pool(spec, o, np.arange(o.particles))
    for g in range(6):  # the means move, so the replay must use each generation's own
        result = pool.run(g, np.asarray(state["mean"]), np.asarray(state["history"]), data)
        diff = result.loss[:, 0] - result.loss[:, 1]
        state = method._update(state, jnp.asarray(diff), method.directions(g), jnp.int32(g))
    fresh = online_pool(spec, o, np.arange(o.particles))
    missing = fresh.run(6, np.asarray(state["mean"]), None, data)
    assert isinstance(missing, Missing)
    stale = o.stream_start(np.arange(o.particles), 6) < 6
    assert np.array_equal(missing.particles, np.flatnonzero(stale))
    rebuilt = fresh.run(6, np.asarray(state["mean"]), np.asarray(state["history"]), data)
    kept = pool.run(6, np.asarray(state["mean"]), np.asarray(state["history"]), data)
    assert rebuilt.loss.tobytes() == kept.loss.tobytes()
    assert rebuilt.accuracy.tobytes() == kept.accuracy.tobytes()
    for a, b in zip(_leaves(fresh.states), _leaves(pool.states), strict=True):
        assert a.tobytes() == b.tobytes()


def _leaves(tree) -> list[np.ndarray]:
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["training.window=5"], "must divide task.episode_length (12)"),
    (["training.window=0"], "training.window' is 0"),
    (["training.population_size=7"], "needs an even\npopulation. Use 8"),
    (["training.eval_chunk=3"], "'training.eval_chunk' is 3"),
    (["task.fitness=last_loss"], "use task.fitness: mean_loss"),
    (["training.method=nrse"], "valid values: es, nres, pes, imitation, backprop"),
])
def test_bad_online_settings_exit_2_before_any_work(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert train(run_dir, [*NRES, *extra], "--workers", "0") == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


# -- end to end: in-process and on Ray -----------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("online") / "reference"
    assert train(run_dir, NRES, "--workers", "0") == 0
    return run_dir


def test_nres_learns_in_process_and_its_metrics_say_so(reference: Path) -> None:
    rows = metric_rows(reference)
    assert [r["generation"] for r in rows] == list(range(7))
    # 4 particles, 4 windows a stream, offsets 0..3: one stream starts every generation.
    assert [r["streams_started"] for r in rows] == [1] * 7
    assert all(np.isfinite(r["fitness_mean"]) for r in rows)
    norms = [r["mean_norm"] for r in rows]
    assert len(set(norms)) == len(norms)  # the mean moves every generation


@pytest.mark.slow
def test_nres_on_two_ray_workers_is_bit_identical_and_ships_no_states(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tmp_path / "ray", NRES, "--workers", "2") == 0
    assert "2 Ray worker(s)" in capsys.readouterr().out
    assert final_params(tmp_path / "ray") == final_params(reference)
    assert metric_rows(tmp_path / "ray") == metric_rows(reference)


@pytest.mark.slow
def test_a_worker_killed_mid_window_costs_a_replay_not_a_bit(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vsml_es import distributed
    from vsml_es.distributed import RayEvaluator
    from vsml_es.trainer import Trainer

    class KillMidWindow(RayEvaluator):
        """SIGKILLs the worker that was just sent its window of generation 3."""

        killed: list[int] = []

        def windows(self, online, generation, theta, history):
            self._kill_now = generation == 3 and not self.killed
            return super().windows(online, generation, theta, history)

        def _jobs(self, jobs):
            if getattr(self, "_kill_now", False):
                self._kill_now = False
                send = jobs[-1].send

                def send_then_kill(handle):
                    ref = send(handle)
                    if self.killed:  # the re-sent job (same object) runs in peace
                        return ref
                    slot = next(s for s in self.slots if s.handle is handle)
                    os.kill(slot.info["pid"], signal.SIGKILL)
                    self.killed.append(slot.info["pid"])
                    return ref

                jobs[-1].send = send_then_kill
            return super()._jobs(jobs)

    config = load_experiment(EXPERIMENT, [*NRES, "distributed.workers=2"])
    with distributed.ray_session(config.distributed):
        spec, data = build_eval_spec(config)
        evaluator = KillMidWindow(spec, data, config.distributed)
        try:
            Trainer(config, tmp_path, evaluator=evaluator, spec=spec, data=data).run()
            replays, resent = evaluator.replays, evaluator.resent
        finally:
            evaluator.close()
    assert evaluator.killed, "no worker was killed"
    assert resent >= 1 and replays >= 1  # re-sent, then rebuilt from the history
    assert "re-sending" in capsys.readouterr().err
    assert final_params(tmp_path) == final_params(reference)
    assert metric_rows(tmp_path) == metric_rows(reference)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigkill_of_the_run_then_resume_is_bit_identical(
    workers: str, reference: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = subprocess_env(tmp_path_factory.getbasetemp() / "jax-cache")
    run_dir = tmp_path / "run"
    command = [*vsml_es_command(), "train", EXPERIMENT, *sets(NRES), "--workers", workers,
               "--run-dir", str(run_dir), "--no-metatest"]
    kill_during_training(run_dir, 4, 0.01, env, command)
    assert not (run_dir / "params.npz").exists()
    assert cli.main(["resume", str(run_dir), "--no-metatest", "--workers", workers]) == 0
    assert final_params(run_dir) == final_params(reference)
    assert metric_rows(run_dir) == metric_rows(reference)


IMITATION = [
    "training.method=imitation",
    "training.population_size=6",
    "training.eval_chunk=4",  # two chunks, the second padded
    "task.episode_length=6",
    "training.generations=3",
    "logging.progress=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("horizon", ["0", "12"])
def test_imitation_on_two_ray_workers_is_bit_identical_to_in_process(
    horizon: str, tmp_path: Path
) -> None:
    overrides = [*IMITATION, f"training.imitation_horizon={horizon}"]
    assert train(tmp_path / "local", overrides, "--workers", "0") == 0
    assert train(tmp_path / "ray", overrides, "--workers", "2") == 0
    assert final_params(tmp_path / "ray") == final_params(tmp_path / "local")
    assert metric_rows(tmp_path / "ray") == metric_rows(tmp_path / "local")


@built
def test_the_fused_kernel_serves_online_windows() -> None:
    """nres with model.kernel fused runs its windows in the C++ kernel: the same losses as the
    JAX kernel, over several windows with the states carried between them, to twice the
    float32 bound of tests/numerics.py (each kernel within it of exact arithmetic) for the
    longest chain a lane can have run: one whole stream."""
    losses = {}
    for kernel in ("jax", "fused"):
        o, method, spec, data = online_spec([*NRES, f"model.kernel={kernel}"])
        model, task = load_experiment(EXPERIMENT, NRES).model, spec.task
        state = method.init(initial_params(load_experiment(EXPERIMENT, NRES), spec))
        pool = online_pool(spec, o, np.arange(o.particles))
        losses[kernel] = np.stack([
            pool.run(g, np.asarray(state["mean"]), np.asarray(state["history"]), data).loss
            for g in range(3)])
    layers = len(model.hidden_layers) + 1
    widest = max(task.num_features, task.num_outputs, *model.hidden_layers)
    tol = 2 * bound(2.0**-24, lstm_updates(o.stream_length, model.micro_ticks, layers,
                                           model.backward_pass),
                    ops_per_update(widest), scale_of([losses["jax"]]))
    assert_within(losses["fused"], losses["jax"], tol, "window losses, fused vs jax")
