"""Population evaluation on Ray actors: a private local Ray by default, or a cluster.

The Ray adapter package (with ``trials``, sweep trials on Ray Tune): the only code that imports
Ray; deleting it removes the choice of evaluator and the sweeps, nothing else.
Each actor holds the dataset (placed once with ``ray.put``) and calls the same
``evaluate_members`` as the in-process evaluator. The driver splits each population into shards
of whole antithetic pairs, sends every shard with its (generation, episode ids) and re-sends the
shard of a dead or hung actor. ``evaluate_members`` runs every member in fixed-size chunks and
episodes are rebuilt from (seed, generation, episode id), so fitness is bit-identical whatever
the worker count, the sharding or the retries.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vsml_es.config import DistributedConfig
from vsml_es.errors import ClusterError, WorkerError
from vsml_es.evaluator import EvalSpec, Evaluation, evaluate_members, slice_members
from vsml_es.tasks import Data

POLL_S = 1.0  # how often the driver looks for hung shards while it waits
CONNECT_TIMEOUT_S = 5.0  # TCP check of a HOST:PORT address before Ray is asked to join it
LOOPBACK = ("127.0.0.1", "::1", "localhost")


# --------------------------------------------------------------------------------------------
# Starting and joining Ray


def _is_loopback(address: str | None) -> bool:
    return address is None or address.rpartition(":")[0].strip("[]") in LOOPBACK


def _prepare_environment(address: str | None) -> None:
    """Environment that Ray reads when it is imported and when it starts its processes."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # never phone home
    if _is_loopback(address):
        # Ray's switch for "this machine only": localhost stays 127.0.0.1 (Ray would rewrite it
        # to the machine's network address), so every listener of an embedded Ray binds to
        # loopback instead of all interfaces. Read when Ray is imported.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _check_reachable(address: str) -> None:
    """A dead host or closed port makes ``ray.init`` retry for minutes; fail in seconds."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ClusterError(
            f"Cannot reach the Ray head at {address} ({err}). Check that 'ray start --head "
            f"--port {port}' is running on {host}, that this machine can reach that port "
            "(firewall, security group, VPN), and that the address is the one 'ray status' "
            "prints on the head node."
        ) from None


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class _DropTokenNotice(logging.Filter):
    """Ray 2.60 announces on every start that token authentication is on. For the private Ray
    it tells the user nothing they need (it is loopback-only and has its token): dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def _init_ray(dist: DistributedConfig, log_to_driver: bool = True) -> None:
    import ray

    common = {"logging_level": logging.WARNING, "namespace": "vsml-es",
              "log_to_driver": log_to_driver}
    if dist.address is None:
        if ray.util.get_node_ip_address() not in ("127.0.0.1", "::1"):
            raise ClusterError(
                "The private local Ray would listen on all network interfaces: Ray was "
                "imported in this process before vsml-es could keep it on loopback. Set the "
                "environment variable RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Python "
                "starts, or join a cluster you started with --ray-address."
            )
        want = (dist.workers or 0) * dist.cpus_per_worker
        ray.init(address="local", num_cpus=max(_cpu_count(), math.ceil(want)),
                 include_dashboard=False, **common)
        return
    if dist.address != "auto":
        _check_reachable(dist.address)
    try:
        ray.init(address=dist.address, **common)
    except ray.exceptions.AuthenticationError as err:
        raise ClusterError(
            f"The Ray cluster at '{dist.address}' refused this driver's token ({err}). Use "
            "the cluster's token: RAY_AUTH_MODE=token and ~/.ray/auth_token or RAY_AUTH_TOKEN "
            "as on its nodes (see cluster/README.md)."
        ) from None
    except (ConnectionError, RuntimeError) as err:  # no cluster, or a Ray version mismatch
        raise ClusterError(
            f"Cannot join a Ray cluster at '{dist.address}': {err} Start one with 'ray start "
            "--head' (see cluster/README.md), or leave --ray-address out for a private local "
            "Ray."
        ) from None


@contextmanager
def ray_session(dist: DistributedConfig, log_to_driver: bool = True) -> Iterator[None]:
    """Start (embedded) or join (address) Ray; always shut down, on errors and Ctrl-C too.

    Start it before heavy JAX work: Ray forks its helper processes, and a fork after JAX's
    threads are busy can deadlock. ``load_config`` has only touched JAX lightly by then; the
    warning JAX prints for that is filtered here. ``log_to_driver=False`` keeps what the Ray
    workers print (in Ray's session logs) off this terminal.
    """
    _prepare_environment(dist.address)  # before the first ``import ray``
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this process; shut it down first.")
    notice = _DropTokenNotice()
    logging.getLogger(_TOKEN_LOGGER).addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                    category=RuntimeWarning)
            _init_ray(dist, log_to_driver)
        yield
    finally:
        ray.shutdown()
        logging.getLogger(_TOKEN_LOGGER).removeFilter(notice)


def resolve_workers(dist: DistributedConfig) -> int:
    """``workers`` or, when unset, one per live node (one per GPU share with GPUs).

    A CPU worker's XLA already uses every core of its node, and its numerics depend on that
    thread count, so more workers per node only oversubscribe it; one per node is the default.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    fits = [_fits_on(r, dist) for r in nodes]
    if max(fits, default=0) == 0:
        largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        message = (
            f"Each Ray worker asks for {dist.cpus_per_worker:g} CPU(s) and "
            f"{dist.gpus_per_worker:g} GPU(s) (distributed.cpus_per_worker, "
            f"distributed.gpus_per_worker), but the largest node has "
            f"{largest.get('CPU', 0):g} CPU(s) and {largest.get('GPU', 0):g} GPU(s)."
        )
        if dist.address is None:
            raise ClusterError(message + " Lower the request, or join a cluster with bigger "
                               "nodes through --ray-address.")
        print(f"warning: {message} Waiting up to {dist.startup_timeout_s:g} s for the "
              "autoscaler to add such a node.", file=sys.stderr)
    if dist.workers is not None:
        return dist.workers
    return max(1, sum(fits))


def _fits_on(resources: dict[str, float], dist: DistributedConfig) -> int:
    """Default workers on one node: one per GPU share, else one (XLA uses all its cores)."""
    count = int(resources.get("CPU", 0) // dist.cpus_per_worker)
    if dist.gpus_per_worker > 0:
        return min(count, int(resources.get("GPU", 0) // dist.gpus_per_worker))
    return min(count, 1)


# --------------------------------------------------------------------------------------------
# Shards


def plan_shards(episode_ids: np.ndarray, shards: int, chunk: int) -> list[np.ndarray]:
    """Member indices of at most ``shards`` shards; members sharing an episode id (antithetic
    pairs) stay together, and shard sizes are whole chunks where possible (no padding)."""
    ids = np.asarray(episode_ids)
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    size = int(counts[0])
    per_unit = chunk // size if np.all(counts == size) and chunk % size == 0 else 1
    units = [groups[i:i + per_unit] for i in range(0, len(groups), per_unit)]
    parts = np.array_split(np.arange(len(units)), max(1, min(shards, len(units))))
    return [np.sort(np.concatenate([m for u in part for m in units[u]])) for part in parts]


def nbytes(tree: Any) -> int:
    import jax

    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------
# The actor


class ShardWorker:
    """Ray actor: keeps the dataset on its devices and evaluates shards of the population.

    The dataset reference comes with each call, wrapped in a list so Ray passes the reference
    rather than the data: the actor loads it once, and again after Ray restarts it. (Ray warns
    about, and cannot always restart, actors whose constructor arguments live in the store.)
    """

    def __init__(self, spec: EvalSpec):
        self.spec = spec
        self.data: Data | None = None

    def _load(self, data_ref: list[Any]) -> Data:
        if self.data is None:
            import jax
            import jax.numpy as jnp
            import ray

            self.data = jax.tree.map(jnp.array, ray.get(data_ref[0]))  # a private copy
        return self.data

    def ping(self, data_ref: list[Any]) -> dict[str, Any]:
        """Where this actor runs; answered once the actor is (re)started and holds the data."""
        import jax
        import ray

        self._load(data_ref)
        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": context.get_node_id(), "devices": [str(d) for d in jax.local_devices()]}

    def evaluate(
        self, data_ref: list[Any], population: Any, generation: int, episode_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        data = self._load(data_ref)
        result = evaluate_members(self.spec, data, population, generation, episode_ids)
        return result.fitness, result.accuracy


# --------------------------------------------------------------------------------------------
# The evaluator


@dataclass
class _Slot:
    """One actor as the driver sees it."""

    handle: Any
    state: str = "starting"  # starting | idle | busy | dead
    ping: Any = None  # ObjectRef of the outstanding ping while starting
    since: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class _Sent:
    """One shard in flight."""

    shard: int
    slot: int
    started: float
    killed: bool = False


@dataclass
class _Generation:
    """Bookkeeping of one ``evaluate`` call."""

    shards: list[np.ndarray]
    population: Any
    episode_ids: np.ndarray
    generation: int
    todo: deque[int]
    fitness: np.ndarray
    accuracy: np.ndarray
    attempts: list[int]
    last_slot: dict[int, int] = field(default_factory=dict)
    sent: dict[Any, _Sent] = field(default_factory=dict)


class RayEvaluator:
    """The Evaluator protocol on long-lived Ray actors (inside a :func:`ray_session`)."""

    def __init__(self, spec: EvalSpec, data: Data, dist: DistributedConfig):
        import jax
        import ray

        self.spec = spec
        self.dist = dist
        self.workers = resolve_workers(dist)
        # XLA's CPU threading is left as in the driver on purpose: its matmul blocking depends on
        # the thread-pool size, and fewer threads (--xla_cpu_multi_thread_eigen=false) changed
        # fitness in the last bit. Same machine type, same settings, same bits.
        env = {}
        if 0 < dist.gpus_per_worker < 1:  # actors share a GPU: each takes only its share
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * dist.gpus_per_worker:.3f}"
        self._actor_cls = ray.remote(ShardWorker).options(
            num_cpus=dist.cpus_per_worker,
            num_gpus=dist.gpus_per_worker,
            max_restarts=-1,  # a killed actor comes back; retries of a shard are bounded below
            max_task_retries=0,  # the driver re-sends shards itself, possibly elsewhere
            scheduling_strategy="SPREAD",  # over the nodes first, not packed onto the head
            runtime_env={"env_vars": env} if env else None,
        )
        self._data_ref = ray.put(jax.tree.map(np.asarray, data))  # placed once, shared
        self.slots = [self._start(self._actor_cls.remote(spec))
                      for _ in range(self.workers)]
        self.resent = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.peak_in_flight = 0
        self.in_flight = 0  # shards running now
        try:
            self._wait_for_workers()
        except BaseException:
            self.close()  # no actor left pending in the cluster
            raise

    # -- actors --------------------------------------------------------------------------------

    def _start(self, handle: Any) -> _Slot:
        return _Slot(handle, ping=handle.ping.remote([self._data_ref]))

    def _restart_wait(self, slot: _Slot) -> None:
        """After a failure: the next ping answers once Ray has restarted the actor."""
        slot.state, slot.since = "starting", time.monotonic()
        slot.ping = slot.handle.ping.remote([self._data_ref])

    def _on_ping(self, slot: _Slot) -> None:
        import ray

        try:
            slot.info = ray.get(slot.ping)
            slot.state, slot.ping = "idle", None
        except ray.exceptions.ActorUnavailableError:
            slot.ping = slot.handle.ping.remote([self._data_ref])  # still restarting
        except ray.exceptions.RayError as err:
            slot.state, slot.error, slot.ping = "dead", _summary(err), None

    def _wait_for_workers(self) -> None:
        """Wait for all actors (up to the startup timeout), at least one."""
        import ray

        deadline = time.monotonic() + self.dist.startup_timeout_s
        while any(s.state == "starting" for s in self.slots) and time.monotonic() < deadline:
            pings = [s.ping for s in self.slots if s.state == "starting"]
            ready, _ = ray.wait(pings, num_returns=len(pings),
                                timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
            for slot in self.slots:
                if slot.state == "starting" and slot.ping in ready:
                    self._on_ping(slot)
        self._check_alive()
        starting = sum(s.state == "starting" for s in self.slots)
        if starting:
            print(f"warning: {starting} of {self.workers} Ray workers did not start within "
                  f"{self.dist.startup_timeout_s:g} s; going on with the others, the rest join "
                  "when Ray places them.", file=sys.stderr)

    def _check_alive(self) -> None:
        if any(s.state in ("idle", "busy") for s in self.slots):
            return
        dead = [s for s in self.slots if s.state == "dead"]
        if len(dead) == len(self.slots):
            raise WorkerError(
                f"All {len(self.slots)} Ray workers are gone (they could not start or be "
                f"restarted); the last error was: {dead[-1].error} Fix the cause (memory, a "
                "package missing on the nodes) or lower distributed.workers."
            )
        oldest = min(s.since for s in self.slots if s.state == "starting")
        if time.monotonic() - oldest > self.dist.startup_timeout_s:
            raise ClusterError(
                f"No Ray worker could be placed within {self.dist.startup_timeout_s:g} s: each "
                f"needs {self.dist.cpus_per_worker:g} CPU(s) and {self.dist.gpus_per_worker:g} "
                f"GPU(s), and the cluster has {_resources()}. Lower distributed.cpus_per_worker "
                "/ gpus_per_worker, add nodes, or raise distributed.startup_timeout_s."
            )

    # -- one generation -------------------------------------------------------------------------

    def evaluate(self, population: Any, generation: int, episode_ids: np.ndarray) -> Evaluation:
        import jax
        import ray

        ids = np.asarray(episode_ids, dtype=np.int32)
        live = sum(s.state != "dead" for s in self.slots)
        shards = plan_shards(ids, live, self.spec.chunk)
        gen = _Generation(
            shards=shards,
            population=jax.tree.map(np.asarray, population),
            episode_ids=ids,
            generation=generation,
            todo=deque(range(len(shards))),
            fitness=np.full(ids.shape, np.nan, np.float32),
            accuracy=np.full(ids.shape, np.nan, np.float32),
            attempts=[0] * len(shards),
        )
        self.peak_in_flight = 0
        while gen.todo or gen.sent:
            self._dispatch(gen)
            pings = {s.ping: s for s in self.slots if s.state == "starting"}
            waiting = list(gen.sent) + list(pings)
            if not waiting:  # nothing running and nothing starting: every actor is dead
                self._check_alive()
            ready, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S)
            for ref in ready:
                if ref in gen.sent:
                    self._collect(gen, ref, gen.sent.pop(ref))
                    self.in_flight = len(gen.sent)
                else:
                    self._on_ping(pings[ref])
            self._kill_hung(gen)
            if gen.todo and not gen.sent:
                self._check_alive()  # stop waiting for actors that never come back
        return Evaluation(gen.fitness, gen.accuracy)

    def _dispatch(self, gen: _Generation) -> None:
        """Give waiting shards to idle actors; a re-sent shard prefers a different actor."""
        while gen.todo:
            idle = [i for i, s in enumerate(self.slots) if s.state == "idle"]
            if not idle:
                return
            shard = gen.todo.popleft()
            idle.sort(key=lambda i: i == gen.last_slot.get(shard))
            slot_index = idle[0]
            members = gen.shards[shard]
            payload = slice_members(gen.population, members)
            ids = gen.episode_ids[members]
            ref = self.slots[slot_index].handle.evaluate.remote(
                [self._data_ref], payload, gen.generation, ids
            )
            self.slots[slot_index].state = "busy"
            gen.sent[ref] = _Sent(shard, slot_index, time.monotonic())
            gen.last_slot[shard] = slot_index
            self.bytes_sent += nbytes(payload) + ids.nbytes
            self.in_flight = len(gen.sent)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _collect(self, gen: _Generation, ref: Any, sent: _Sent) -> None:
        import ray

        slot = self.slots[sent.slot]
        members = gen.shards[sent.shard]
        try:
            fitness, accuracy = ray.get(ref)
        except ray.exceptions.RayError as err:
            self._retry(gen, sent, slot, err)
            return
        gen.fitness[members] = fitness
        gen.accuracy[members] = accuracy
        self.bytes_received += fitness.nbytes + accuracy.nbytes
        slot.state = "idle"

    def _retry(self, gen: _Generation, sent: _Sent, slot: _Slot, err: Exception) -> None:
        gen.attempts[sent.shard] += 1
        where = f"worker pid {slot.info.get('pid', '?')} on {slot.info.get('node', '?')}"
        if gen.attempts[sent.shard] > self.dist.max_retries:
            raise WorkerError(
                f"Shard {sent.shard} of generation {gen.generation} "
                f"({len(gen.shards[sent.shard])} members) failed {gen.attempts[sent.shard]} "
                f"times; the last try, on {where}, ended with: {_summary(err)} If a worker "
                "runs out of memory, lower training.eval_chunk or give each worker more "
                "(distributed.cpus_per_worker); distributed.max_retries sets the number of "
                "tries. The last checkpoint is intact: resume with 'vsml-es resume RUN_DIR'."
            )
        self.resent += 1
        print(f"warning: shard {sent.shard} of generation {gen.generation} failed on {where} "
              f"({_summary(err, 160)}); re-sending (try {gen.attempts[sent.shard] + 1} of "
              f"{self.dist.max_retries + 1}).", file=sys.stderr)
        gen.todo.appendleft(sent.shard)
        self._restart_wait(slot)

    def _kill_hung(self, gen: _Generation) -> None:
        """A shard past its timeout: restart its actor; the failure then re-sends the shard."""
        import ray

        now = time.monotonic()
        for sent in gen.sent.values():
            if not sent.killed and now - sent.started > self.dist.shard_timeout_s:
                sent.killed = True
                print(f"warning: shard {sent.shard} of generation {gen.generation} ran longer "
                      f"than distributed.shard_timeout_s={self.dist.shard_timeout_s:g}; "
                      "restarting its worker.", file=sys.stderr)
                ray.kill(self.slots[sent.slot].handle, no_restart=False)

    # -- protocol --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        alive = sum(s.state in ("idle", "busy") for s in self.slots)
        return {"workers": f"{alive}/{len(self.slots)}", "in_flight": self.peak_in_flight,
                "resent": self.resent}

    def describe(self) -> str:
        """For the log: how many workers, on how many nodes, where."""
        up = [s.info for s in self.slots if s.state in ("idle", "busy")]
        nodes = len({info["node_id"] for info in up})
        where = ("a private Ray on this machine (loopback only)" if self.dist.address is None
                 else f"the Ray cluster at {self.dist.address}")
        return (f"{len(up)} Ray worker(s) on {nodes} node(s) of {where}, "
                f"{self.dist.cpus_per_worker:g} CPU(s) and {self.dist.gpus_per_worker:g} GPU(s) "
                "reserved each")

    def close(self) -> None:
        import ray

        for slot in self.slots:
            ray.kill(slot.handle, no_restart=True)
        self.slots = []


def _summary(err: BaseException, limit: int = 600) -> str:
    """The remote error without Ray's traceback banner."""
    cause = getattr(err, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resources() -> str:
    import ray

    total = ray.cluster_resources()
    return f"{total.get('CPU', 0):g} CPU(s) and {total.get('GPU', 0):g} GPU(s) in all"
