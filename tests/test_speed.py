"""The speed work changes no result: layout round trip, fitness independent of the device
count (in one process and across processes with different host-device counts), and no
recompilation between generations or after a resume. No timings here (benchmarks/ has them)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vsml_es import episodes, host_devices, vsml
from vsml_es.config import ModelConfig
from vsml_es.evaluator import LocalEvaluator, build_eval_spec, evaluate_members
from vsml_es.experiment import load_experiment

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def test_fast_layout_round_trip_and_shape() -> None:
    model = ModelConfig()
    (state,) = vsml.init_layer_states(jax.random.key(0), model, [(5, 3)])
    fast = vsml.to_fast(state)
    assert fast.h.shape == fast.c.shape == (model.state_size, 3, 5)  # [s, n_out, n_in]
    back = vsml.from_fast(fast)
    for a, b in zip(back, state, strict=True):
        np.testing.assert_array_equal(a, b)


def _population(config, n: int) -> dict:
    params = vsml.init_params(jax.random.key(0), config.model)
    keys = jax.random.split(jax.random.key(1), len(params))
    return {
        name: np.asarray(v + 0.2 * jax.random.normal(k, (n, *v.shape)))
        for k, (name, v) in zip(keys, sorted(params.items()), strict=True)
    }


@pytest.mark.skipif(len(jax.local_devices()) < 2, reason="needs 2 devices (a 2-core machine)")
def test_fitness_same_bits_on_one_or_several_devices(tiny_overrides) -> None:
    # 3 chunks over 2 devices: a full group of 2 and a remainder of 1 (smaller mesh)
    config = load_experiment(QUICKSTART, [*tiny_overrides, "training.eval_chunk=3"])
    spec, data = build_eval_spec(config)
    pop = _population(config, 8)
    ids = np.arange(8) // 2  # antithetic pairs share episodes
    devices = tuple(jax.local_devices())
    one = evaluate_members(spec, data, pop, 2, ids, devices[:1])
    two = evaluate_members(spec, data, pop, 2, ids, devices[:2])
    np.testing.assert_array_equal(one.fitness, two.fitness)
    np.testing.assert_array_equal(one.accuracy, two.accuracy)
    assert one.fitness.shape == (8,) and np.isfinite(one.fitness).all()


_CHILD = """
import json, os, sys
import jax, numpy as np
from vsml_es.experiment import load_experiment
from vsml_es.evaluator import build_eval_spec, evaluate_members
config = load_experiment(sys.argv[1], json.loads(sys.argv[2]))
spec, data = build_eval_spec(config)
pop = dict(np.load(sys.argv[3]))
f = evaluate_members(spec, data, pop, 1, np.arange(6) // 2).fitness
tasks = "/proc/self/task"
eigen = sum(open(f"{tasks}/{t}/comm").read().startswith("tf_XLAEigen") for t in os.listdir(tasks))
print(json.dumps({"devices": len(jax.local_devices()), "bits": f.view(np.uint32).tolist(),
                  "xla_threads": eigen}))
"""


def test_fitness_same_bits_whatever_the_host_device_count(tiny_overrides, tmp_path) -> None:
    """Ray workers and resumed runs may split the CPU differently: same bits regardless.
    Three chunks: on two devices a full group of two and a remainder on a smaller mesh; last,
    a Ray worker's share of a machine that it splits with others (one device, one XLA thread
    where the others have as many threads as cores)."""
    config = load_experiment(QUICKSTART, [*tiny_overrides, "training.eval_chunk=2"])
    np.savez(tmp_path / "pop.npz", **_population(config, 6))
    results = []
    for count in ("1", "2", "share"):
        env = {**os.environ, host_devices.ENV_VAR: count}
        env.pop("XLA_FLAGS", None)  # this process's own device count must not be inherited
        if count == "share":
            env.update(host_devices.share_environment(1, env))
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(QUICKSTART),
             json.dumps([*tiny_overrides, "training.eval_chunk=2"]), str(tmp_path / "pop.npz")],
            env=env, capture_output=True, text=True, check=True, timeout=600,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["devices"] for r in results] == [1, 2, 1]
    assert results[2]["xla_threads"] == 1
    assert results[0]["bits"] == results[1]["bits"] == results[2]["bits"]


class _CompileCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Finished XLA compilation" in message:
            self.names.append(message)


@pytest.fixture
def compiles():
    counter = _CompileCounter()
    logger = logging.getLogger("jax")
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        jax.config.update("jax_log_compiles", previous)


def test_no_recompilation_between_generations_or_after_resume(
    tiny_overrides, tmp_path, compiles
) -> None:
    """The jitted evaluator is built once per process and reused by every generation and by
    the new evaluator of a resumed run."""
    # Start cold: other tests in this process may already have compiled the same shapes.
    jax.clear_caches()
    episodes.population_fitness_on.cache_clear()
    config = load_experiment(QUICKSTART, tiny_overrides)
    spec, data = build_eval_spec(config)
    evaluator = LocalEvaluator(spec, data)
    pop = _population(config, config.training.population_size)
    ids = np.arange(config.training.population_size) // 2
    evaluator.evaluate(pop, 0, ids)  # generation 0 compiles what it needs
    first = len(compiles.names)
    assert first > 0  # the counter does see compilations
    for generation in (1, 2):
        evaluator.evaluate(jax.tree.map(lambda a: a * 1.01, pop), generation, ids)
    resumed = LocalEvaluator(*build_eval_spec(config))  # what a resumed run builds
    resumed.evaluate(pop, 3, ids)
    assert compiles.names[first:] == []


def test_vector_width_flag_on_avx512_only(monkeypatch) -> None:
    vector = host_devices.VECTOR_FLAG
    assert host_devices.has_avx512("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert not host_devices.has_avx512("flags\t\t: fpu sse2 avx2 fma\n")
    monkeypatch.setattr(host_devices, "_jax_backend_started", lambda: False)
    monkeypatch.setattr(host_devices, "has_avx512", lambda: True)
    env = {host_devices.ENV_VAR: "1"}
    host_devices.configure(env)
    assert env["XLA_FLAGS"] == f"{vector}=512"
    users = {"XLA_FLAGS": f"{vector}=256", host_devices.ENV_VAR: "2"}  # the user's choice wins
    host_devices.configure(users)
    assert users["XLA_FLAGS"] == f"{vector}=256 {host_devices.XLA_FLAG}=2"


def test_host_device_setting(monkeypatch) -> None:
    env_var, flag = host_devices.ENV_VAR, host_devices.XLA_FLAG
    monkeypatch.setattr(host_devices, "_jax_backend_started", lambda: False)
    monkeypatch.setattr(host_devices, "has_avx512", lambda: False)
    env = {env_var: "3"}
    assert host_devices.configure(env) == 3 and env["XLA_FLAGS"] == f"{flag}=3"
    other = {"XLA_FLAGS": "--xla_cpu_foo=1", env_var: "2"}
    host_devices.configure(other)
    assert other["XLA_FLAGS"] == f"--xla_cpu_foo=1 {flag}=2"
    opt_out = {env_var: "1"}
    assert host_devices.configure(opt_out) == 1 and "XLA_FLAGS" not in opt_out
    users = {"XLA_FLAGS": f"{flag}=5", env_var: "3"}  # the user's own choice wins
    assert host_devices.configure(users) is None and users["XLA_FLAGS"] == f"{flag}=5"
    cpus = len(os.sched_getaffinity(0))
    default: dict[str, str] = {}
    assert host_devices.configure(default) == cpus  # auto: one per CPU this process may use
    assert ("XLA_FLAGS" in default) == (cpus > 1)
    share = host_devices.share_environment(1, {"XLA_FLAGS": f"--xla_cpu_foo=1 {flag}=4"})
    assert share == {"XLA_FLAGS": "--xla_cpu_foo=1", env_var: "1", host_devices.THREADS_VAR: "1"}
    assert host_devices.share_environment(2, {})["XLA_FLAGS"] == f"{flag}=2"
    with pytest.raises(ValueError, match=env_var):
        host_devices.configure({env_var: "many"})
    with pytest.raises(ValueError, match="at least 1"):
        host_devices.configure({env_var: "0"})
    monkeypatch.setattr(host_devices, "_jax_backend_started", lambda: True)
    late = {env_var: "3"}  # JAX already running: too late, nothing is changed
    assert host_devices.configure(late) is None and "XLA_FLAGS" not in late
