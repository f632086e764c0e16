"""The distributed driver at scale on one machine: a real local Ray with up to 128 light actors
whose evaluation is a calibrated sleep, driven by the real RayEvaluator (shards, transfer,
re-sends, backup copies) and the real ES ask/tell (Open_ES + Adam, 2,384 parameters).

A light actor never imports JAX (so 2 cores host 128 of them): it sleeps ``ideal x workers /
population`` seconds per member, so that a perfect split of a generation takes ``--ideal``
seconds, and returns a fitness made from (generation, episode id). For each worker count and
population it reports the driver's own time per generation (ask, tell, dispatch: the
generation minus the workers' sleep), the bytes sent to the workers per generation (total and
to one worker), and the generation time against the ideal; then the same with one worker
slowed 10x (backup copies on, and off for contrast) and with one worker SIGKILLed in the
middle of a generation.

    python benchmarks/scale_sim.py               # 1, 8, 32 workers: a few minutes on 2 cores
    python benchmarks/scale_sim.py --workers 1,8,32,128   # 128 light actors as well
    python benchmarks/scale_sim.py --workers 1,8 --populations 64,2048 --generations 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vsml_es.config import DistributedConfig

PARAMS_LAYOUT = {"lstm": (16 * 4 * 8 * 2 + 16 * 4 * 16,), "rest": (2384 - 2048,)}  # 2,384


@dataclass(frozen=True)
class SimSpec:
    """What the light actors need: the chunk (for the shard plan) and the sleep per member."""

    chunk: int
    seconds_per_member: float


class SimWorker:
    """A Ray actor that sleeps instead of evaluating (numpy only: no JAX in its process)."""

    def __init__(self, spec: SimSpec, slowdown: float = 1.0):
        self.seconds_per_member = spec.seconds_per_member
        self.slowdown = slowdown

    def set_seconds_per_member(self, seconds: float) -> None:
        """Calibrated per case: a perfect split of the generation takes --ideal seconds."""
        self.seconds_per_member = seconds

    def ping(self, data_ref: list[Any]) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": "127.0.0.1",
                "node_id": ray.get_runtime_context().get_node_id(), "devices": []}

    def _work(self, generation: int, episode_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.seconds_per_member * len(episode_ids) * self.slowdown)
        fitness = np.sin(generation * 7919.0 + episode_ids).astype(np.float32)
        return fitness, np.zeros_like(fitness)

    def evaluate(self, data_ref: list[Any], population: Any, generation: int,
                 episode_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._work(generation, episode_ids)

    def evaluate_recipe(self, data_ref: list[Any], drawer_ref: list[Any], recipe: Any,
                        members: np.ndarray, generation: int, episode_ids: np.ndarray,
                        verify: bool) -> tuple[np.ndarray, np.ndarray, str]:
        return (*self._work(generation, episode_ids), "")


@dataclass
class Row:
    workers: int
    population: int
    case: str
    transfer: str
    driver_ms: float
    bytes_total: float
    bytes_one: float
    gen_s: float
    ideal_s: float
    backups_won: int = 0
    resent: int = 0
    identical: bool = True


def sim_evaluator(ray_evaluator: Any, workers: int, population_hint: int, ideal: float,
                  slowdown: dict[int, float] | None = None) -> Any:
    """Light actors for one worker count (their sleep per member is set per case)."""
    dist = DistributedConfig(workers=workers, shard_timeout_s=600.0, max_retries=3,
                             startup_timeout_s=600.0)
    spec = SimSpec(chunk=2, seconds_per_member=ideal * workers / population_hint)
    return ray_evaluator(spec, {"x": np.zeros(1, np.float32)}, dist, log=lambda _: None,
                         slowdown=slowdown, worker_cls=SimWorker, verify=False)


def run_case(evaluator: Any, template: Any, workers: int, population: int,
             generations: int, ideal: float, case: str, transfer: str) -> Row:
    """Generations of ask -> evaluate_asked -> tell on the light actors of ``evaluator``."""
    import jax
    import optax
    from evosax.algorithms import Open_ES

    from vsml_es.es import strongly_typed
    from vsml_es.evaluator import AskRecipe

    algorithm = Open_ES(population_size=population, solution=template,
                        optimizer=optax.adam(0.025), std_schedule=optax.constant_schedule(0.05))
    params = algorithm.default_params
    evaluator.dist = replace(evaluator.dist, transfer=transfer,
                             backup_after=0.0 if case == "straggler, no backups" else 1.5)
    for slot in evaluator.slots:  # each actor reads its sleep per member from its spec
        slot.handle.set_seconds_per_member.remote(ideal * workers / population)
    ids = np.arange(population, dtype=np.int32) % (population // 2)
    expected = [np.sin(g * 7919.0 + ids).astype(np.float32) for g in range(generations + 1)]
    state = strongly_typed(algorithm.init(jax.random.key(0), template, params))
    resent, backups = evaluator.resent, evaluator.backups_won
    gen_s, driver_s, sent, one = [], [], [], []
    identical = True
    for g in range(generations + 1):  # generation 0: compile and first contact
        if case == "worker killed" and g == 2:
            pid = evaluator.slots[0].info["pid"]  # sent its shard first: killed mid-shard
            threading.Timer(ideal / 2, os.kill, (pid, signal.SIGKILL)).start()
        before = evaluator.bytes_sent
        start = time.perf_counter()
        key = jax.random.fold_in(jax.random.key(1), g)
        members, state_asked = algorithm.ask(key, state, params)
        t_eval = time.perf_counter()
        result = evaluator.evaluate_asked(AskRecipe(algorithm, key, state, params), members,
                                          g, ids)
        t_tell = time.perf_counter()
        state, _ = algorithm.tell(key, members, result.fitness, state_asked, params)
        state = strongly_typed(jax.block_until_ready(state))
        end = time.perf_counter()
        identical &= bool(np.array_equal(result.fitness, expected[g]))
        if g:
            gen_s.append(end - start)
            driver_s.append((t_eval - start) + (end - t_tell))
            sent.append(evaluator.bytes_sent - before)
            one.append(evaluator.max_bytes_to_one_worker)
    mode = evaluator.transfer.mode if evaluator.transfer else transfer
    return Row(workers, population, case, mode, 1e3 * statistics.median(driver_s),
               statistics.median(sent), statistics.median(one),
               statistics.median(gen_s) if case != "worker killed" else max(gen_s), ideal,
               evaluator.backups_won - backups, evaluator.resent - resent, identical)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,8,32",
                        help="comma list (1,8,32,128: the full grid, ~11 min on 2 busy cores)")
    parser.add_argument("--populations", default="64,2048,8192")
    parser.add_argument("--generations", type=int, default=4, help="timed, per case")
    parser.add_argument("--ideal", type=float, default=0.5,
                        help="seconds a perfectly split generation takes (the calibrated sleep)")
    parser.add_argument("--faults-at", default="32x2048",
                        help="WORKERSxPOPULATION of the straggler and killed-worker cases")
    args = parser.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",")]
        populations = [int(p) for p in args.populations.split(",")]
        fault_w, fault_p = (int(v) for v in args.faults_at.split("x"))
    except ValueError as err:
        parser.error(f"--workers, --populations and --faults-at take integers: {err}")
    if (min(workers + [fault_w]) < 1 or max(workers + [fault_w]) > 256
            or any(p < 2 or p % 2 for p in [*populations, fault_p])
            or args.generations < 1 or args.ideal <= 0):
        parser.error("workers 1-256, even populations >= 2, --generations >= 1, --ideal > 0")
    faults = ("worker killed", "straggler, backups", "straggler, no backups")

    from vsml_es import distributed  # Ray starts before the JAX work

    load = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []

    def run(evaluator: Any, w: int, p: int, case: str, mode: str) -> None:
        rows.append(run_case(evaluator, template, w, p, args.generations, args.ideal, case,
                             mode))
        print(_line(rows[-1]), flush=True)

    # One Ray "CPU" per light actor (they sleep): the private Ray offers max(cores, workers).
    most = max([*workers, fault_w])
    with distributed.ray_session(DistributedConfig(workers=most), log_to_driver=False):
        import jax.numpy as jnp

        template = {k: jnp.zeros(v) for k, v in PARAMS_LAYOUT.items()}
        print(_header())
        for w in sorted({*workers, fault_w}):
            # A restarted actor sleeps at its constructor's rate: the killed case's rate.
            hint = fault_p if w == fault_w else populations[0]
            evaluator = sim_evaluator(distributed.RayEvaluator, w, hint, args.ideal)
            try:
                for p in populations if w in workers else []:
                    for mode in ("recipe", "members"):
                        run(evaluator, w, p, "plain", mode)
                if w == fault_w:
                    run(evaluator, w, fault_p, faults[0], "recipe")
            finally:
                evaluator.close()
            if w == fault_w:
                evaluator = sim_evaluator(distributed.RayEvaluator, w, fault_p, args.ideal,
                                          slowdown={0: 10.0})
                try:
                    for case in faults[1:]:
                        run(evaluator, w, fault_p, case, "recipe")
                finally:
                    evaluator.close()
    print(f"\n{_header()}")
    for row in rows:
        print(_line(row))
    elapsed = time.perf_counter() - started
    print(f"\nlight Ray actors on {os.cpu_count()} CPU(s); load average {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at the end; {elapsed:.0f} s in all. gen: median of "
          f"{args.generations} generations (the killed case: the generation with the kill); "
          "driver: ask + tell, median (dispatch is in gen - ideal).")
    return 0 if all(r.identical for r in rows) else 1


def _header() -> str:
    return (f"{'workers':>7} {'pop':>5} {'case':<22} {'transfer':<8} {'driver ms':>9} "
            f"{'kB/gen':>9} {'kB/worker':>9} {'gen s':>6} {'ideal s':>7} {'gen/ideal':>9} "
            f"{'backups':>7} {'resent':>6} {'fitness ok':>10}")


def _line(r: Row) -> str:
    return (f"{r.workers:>7} {r.population:>5} {r.case:<22} {r.transfer:<8} "
            f"{r.driver_ms:>9.1f} {r.bytes_total / 1e3:>9.1f} {r.bytes_one / 1e3:>9.1f} "
            f"{r.gen_s:>6.2f} {r.ideal_s:>7.2f} {r.gen_s / r.ideal_s:>9.2f} {r.backups_won:>7} "
            f"{r.resent:>6} {str(r.identical):>10}")


if __name__ == "__main__":
    sys.exit(main())
