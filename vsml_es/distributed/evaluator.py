"""The Evaluator protocol on long-lived Ray actors: shards out, fitness back, failures re-sent,
stragglers backed up.

The driver splits each population into shards of whole antithetic pairs and gives each to an
idle actor, as the members themselves or as the ES recipe they were drawn from
(``transfer``). A dead or hung actor's shard is re-sent. Once no shard is waiting and an actor
is idle, a shard still running ``backup_after`` times longer than this generation's finished
shards took (their median) is sent to that actor as well, and the first answer is taken
(MapReduce's backup tasks): one slow worker costs about one shard's time, not its own
slowness. Every copy runs the same computation, so fitness is bit-identical whichever answers.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vsml_es.config import DistributedConfig
from vsml_es.distributed.session import _resources, _summary, cores_per_worker, resolve_workers
from vsml_es.distributed.shards import plan_shards
from vsml_es.distributed.transfer import Choice, choose, digest, nbytes, wire_nbytes
from vsml_es.distributed.worker import ShardWorker
from vsml_es.errors import ClusterError, Report, WorkerError
from vsml_es.evaluator import (
    AskRecipe,
    EvalSpec,
    Evaluation,
    GradientChunk,
    GradientResult,
    slice_members,
)
from vsml_es.host_devices import share_environment
from vsml_es.imitation import Imitation
from vsml_es.online import Missing, OnlineSpec, WindowResult, particle_blocks
from vsml_es.tasks import Data

POLL_S = 1.0  # how often the driver looks for hung shards while it waits
# A recipe up to this size travels inside each task (Ray inlines arguments below 100 KiB):
# no object-store write on the driver and no fetch on the worker before it can start. A
# larger one is put in the object store once per generation and shared by every task.
INLINE_BYTES = 64 * 1024


@dataclass
class _Slot:
    """One actor as the driver sees it."""

    handle: Any
    state: str = "starting"  # starting | idle | busy | dead
    ping: Any = None  # ObjectRef of the outstanding ping while starting
    since: float = field(default_factory=time.monotonic)
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    verified: bool = False  # this process redrew members bit for bit (recipe transfer)


@dataclass
class _Sent:
    """One copy of a shard in flight."""

    shard: int
    slot: int
    started: float
    killed: bool = False
    backup: bool = False  # a second copy of a running shard
    verify: str | None = None  # the driver's digest of the members, when the worker checks


@dataclass
class _Job:
    """One task of a ``_jobs`` round: how to send it to an actor, and where it must run."""

    send: Any  # (actor handle) -> ObjectRef
    slot: int | None = None  # the actor that owns its state (online windows), else any
    block: int = -1  # the online block it advances
    tries: int = 0
    what: str = ""  # for messages


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
    recipe: Any = None  # this generation's transfer.Wire, or its ObjectRef (recipe transfer)
    recipe_nbytes: int = 0
    host: Any = None  # the population as numpy, made when first needed
    last_slot: dict[int, int] = field(default_factory=dict)
    sent: dict[Any, _Sent] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)

    def members(self) -> Any:
        if self.host is None:
            import jax

            self.host = jax.tree.map(np.asarray, self.population)
        return self.host

    def copies(self, shard: int) -> list[_Sent]:
        return [s for s in self.sent.values() if s.shard == shard]

    def copy_counts(self) -> Counter[int]:
        """Copies in flight per shard (one pass: hundreds of workers poll this)."""
        return Counter(s.shard for s in self.sent.values())


class RayEvaluator:
    """The Evaluator protocol on long-lived Ray actors (inside a :func:`ray_session`).

    ``slowdown`` (worker index -> factor) and ``worker_cls`` are for tests and benchmarks: a
    real straggler, and light actors that simulate the evaluation.
    """

    def __init__(self, spec: EvalSpec, data: Data, dist: DistributedConfig, *,
                 log: Report = print, slowdown: Mapping[int, float] | None = None,
                 worker_cls: type = ShardWorker, verify: bool = True):
        import jax
        import ray

        self.spec = spec
        self.dist = dist
        self.workers = resolve_workers(dist)
        self._log = log
        self._verify = verify
        # Workers sharing this machine split its cores (XLA host devices and threads) instead
        # of each sizing XLA to all of them: 2 workers on 2 cores ran 4 XLA threads.
        cores = cores_per_worker(dist, self.workers)
        env = share_environment(cores) if cores is not None else {}
        if 0 < dist.gpus_per_worker < 1:  # actors share a GPU: each takes only its share
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * dist.gpus_per_worker:.3f}"
        self._actor_cls = ray.remote(worker_cls).options(
            num_cpus=dist.cpus_per_worker,
            num_gpus=dist.gpus_per_worker,
            max_restarts=-1,  # a killed actor comes back; retries of a shard are bounded below
            max_task_retries=0,  # the driver re-sends shards itself, possibly elsewhere
            scheduling_strategy="SPREAD",  # over the nodes first, not packed onto the head
            runtime_env={"env_vars": env} if env else None,
        )
        self._data_ref = ray.put(jax.tree.map(np.asarray, data))  # placed once, shared
        slowdown = dict(slowdown or {})
        self.slots = [self._start(self._actor_cls.remote(spec, slowdown.get(i, 1.0)))
                      for i in range(self.workers)]
        self.transfer: Choice | None = None  # decided at the first recipe
        # (algorithm, its Drawer or None, the Drawer's ObjectRef), for the recipe transfer
        self._drawer: tuple[Any, Any, Any] | None = None
        self._stale: dict[Any, _Sent] = {}  # losing copies still running on their actors
        self.resent = 0
        self.backups_sent = 0
        self.backups_won = 0  # shards whose backup copy answered first
        self.bytes_sent = 0
        self.bytes_received = 0
        self.max_bytes_to_one_worker = 0  # in one generation
        self.peak_in_flight = 0
        self.in_flight = 0  # shards running now
        self.window_bytes: tuple[int, int] = (0, 0)  # to / from the workers, last window
        self.replays = 0  # blocks of online particles rebuilt by a worker
        self._method_ref: tuple[Any, Any] | None = None  # (gradient method, its ObjectRef)
        self._online_ref: tuple[Any, Any] | None = None  # (OnlineSpec, its ObjectRef)
        self._owners: dict[int, int] = {}  # online block -> slot owning its states
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
        slot.state, slot.since, slot.verified = "starting", time.monotonic(), False
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
        """Evaluate ``population``, sending each shard its members."""
        return self._run(population, None, generation, episode_ids)

    def evaluate_asked(self, recipe: AskRecipe, population: Any, generation: int,
                       episode_ids: np.ndarray) -> Evaluation:
        """Evaluate ``population`` drawn by ``recipe``: the workers redraw their members from it
        where the strategy allows (chosen at the first call and logged), else as ``evaluate``."""
        live = max(1, sum(s.state != "dead" for s in self.slots))
        if self._drawer is None or self._drawer[0] is not recipe.algorithm:
            self._decide(recipe, population, live)
        return self._run(population, recipe, generation, episode_ids)

    def _decide(self, recipe: AskRecipe, population: Any, shards: int) -> None:
        import ray

        self.transfer, drawer = choose(self.dist.transfer, recipe, population, shards)
        self._drawer = (recipe.algorithm, drawer, ray.put(drawer) if drawer else None)
        for slot in self.slots:
            slot.verified = False
        self._log(f"population transfer: {self.transfer.mode} ({self.transfer.reason})")

    def _run(self, population: Any, recipe: AskRecipe | None, generation: int,
             episode_ids: np.ndarray) -> Evaluation:
        import ray

        ids = np.asarray(episode_ids, dtype=np.int32)
        # One shard per actor that can start now: an actor still busy with the losing copy of
        # an earlier straggler's shard gets none (fitness does not depend on the plan).
        free = sum(s.state in ("idle", "starting") for s in self.slots)
        live = sum(s.state != "dead" for s in self.slots)
        shards = plan_shards(ids, free or live, self.spec.chunk)
        gen = _Generation(
            shards=shards,
            population=population,
            episode_ids=ids,
            generation=generation,
            todo=deque(range(len(shards))),
            fitness=np.full(ids.shape, np.nan, np.float32),
            accuracy=np.full(ids.shape, np.nan, np.float32),
            attempts=[0] * len(shards),
        )
        if recipe is not None and self.transfer is not None and self.transfer.mode == "recipe":
            wire = self._drawer[1].wire(recipe)
            gen.recipe_nbytes = wire_nbytes(wire)
            gen.recipe = wire if gen.recipe_nbytes <= INLINE_BYTES else ray.put(wire)
        self.peak_in_flight = 0
        self._sent_to: dict[int, int] = {}  # bytes to each slot this generation
        while gen.todo or gen.sent:
            self._dispatch(gen)
            pings = {s.ping: s for s in self.slots if s.state == "starting"}
            waiting = list(gen.sent) + list(self._stale) + list(pings)
            if not waiting:  # nothing running and nothing starting: every actor is dead
                self._check_alive()
            ready, _ = ray.wait(waiting, num_returns=1, timeout=self._wait_s(gen))
            for ref in ready:
                if ref in gen.sent:
                    self._collect(gen, ref, gen.sent.pop(ref))
                    self.in_flight = len(gen.sent)
                elif ref in self._stale:
                    self._drop_stale(ref, self._stale.pop(ref))
                else:
                    self._on_ping(pings[ref])
            self._kill_hung(gen)
            if gen.todo and not gen.sent:
                self._check_alive()  # stop waiting for actors that never come back
        self.max_bytes_to_one_worker = max(self._sent_to.values(), default=0)
        return Evaluation(gen.fitness, gen.accuracy)

    def _dispatch(self, gen: _Generation) -> None:
        """Give waiting shards to idle actors, then backups of stragglers; a re-sent or backup
        shard prefers an actor that has not had it."""
        while True:
            idle = [i for i, s in enumerate(self.slots) if s.state == "idle"]
            if not idle:
                return
            backup = not gen.todo
            shard = self._straggler(gen) if backup else gen.todo.popleft()
            if shard is None:
                return
            running = {s.slot for s in gen.copies(shard)}
            idle.sort(key=lambda i: (i in running, i == gen.last_slot.get(shard)))
            self._send(gen, shard, idle[0], backup)

    def _send(self, gen: _Generation, shard: int, slot_index: int, backup: bool) -> None:
        slot = self.slots[slot_index]
        members = gen.shards[shard]
        ids = gen.episode_ids[members]
        verify = None
        if gen.recipe is not None:
            check = self._verify and not slot.verified
            verify = digest(slice_members(gen.members(), members)) if check else None
            ref = slot.handle.evaluate_recipe.remote(
                [self._data_ref], [self._drawer[2]], gen.recipe, members, gen.generation, ids,
                check)
            size = gen.recipe_nbytes + members.nbytes + ids.nbytes
        else:
            payload = slice_members(gen.members(), members)
            ref = slot.handle.evaluate.remote([self._data_ref], payload, gen.generation, ids)
            size = nbytes(payload) + ids.nbytes
        slot.state = "busy"
        gen.sent[ref] = _Sent(shard, slot_index, time.monotonic(), backup=backup, verify=verify)
        gen.last_slot[shard] = slot_index
        self.bytes_sent += size
        self._sent_to[slot_index] = self._sent_to.get(slot_index, 0) + size
        self.backups_sent += backup
        self.in_flight = len(gen.sent)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    # -- online windows and gradient chunks ----------------------------------------------------

    def windows(self, online: OnlineSpec, generation: int, theta: np.ndarray,
                history: np.ndarray) -> WindowResult:
        """One window of every particle, each block of particles on the actor that holds its
        states: only θ and the generation go down, losses come up. An actor without a block's
        states (restarted, or given a dead actor's block) answers Missing and is sent the
        history to rebuild them by replay."""
        import ray

        blocks = particle_blocks(online, len(self.slots))
        theta = np.asarray(theta, np.float32)
        if self._online_ref is None or self._online_ref[0] != online:
            self._online_ref = (online, ray.put(online))  # settings: once per run
        online_ref = [self._online_ref[1]]
        answers: list[Any] = [None] * len(blocks)
        sent = received = 0

        def job(b: int, with_history: bool) -> _Job:
            nonlocal sent
            past = np.asarray(history, np.float32) if with_history else None
            sent += theta.nbytes + 16 + (0 if past is None else past.nbytes)  # + 2 ints
            first, count = int(blocks[b][0]), len(blocks[b])
            return _Job(lambda handle: handle.window.remote(
                [self._data_ref], online_ref, first, count, generation, theta, past),
                slot=self._owners.setdefault(b, b % len(self.slots)), block=b,
                what=f"online block {b} (generation {generation})")

        jobs = [job(b, False) for b in range(len(blocks))]
        while jobs:
            missing = []
            for j, answer in zip(jobs, self._jobs(jobs), strict=True):
                if isinstance(answer, Missing):
                    missing.append(j.block)
                else:
                    answers[j.block] = answer
                    received += answer.loss.nbytes + answer.accuracy.nbytes
            self.replays += len(missing)
            jobs = [job(b, True) for b in missing]
        self.window_bytes = (sent, received)
        loss = np.concatenate([a.loss for a in answers])
        accuracy = np.concatenate([a.accuracy for a in answers])
        return WindowResult(loss, accuracy)

    def gradients(self, method: Imitation, params: Any, generation: int,
                  chunks: list[GradientChunk]) -> list[GradientResult]:
        """Each chunk on any idle actor; the answers in chunk order (the driver sums them)."""
        import jax
        import ray

        if self._method_ref is None or self._method_ref[0] is not method:
            self._method_ref = (method, ray.put(method))
        ref = self._method_ref[1]
        params = jax.tree.map(np.asarray, params)
        jobs = [_Job((lambda handle, c=c: handle.gradients.remote(
            [self._data_ref], [ref], params, generation, c)),
            what=f"gradient chunk {i} (generation {generation})")
            for i, c in enumerate(chunks)]
        return self._jobs(jobs)

    def _jobs(self, jobs: list[_Job]) -> list[Any]:
        """Run ``jobs`` on the actors and return their answers in order. A job whose actor
        fails is sent again (to the restarted actor that owns it, or to any), at most
        ``distributed.max_retries`` times; a job whose owner is dead for good moves to a live
        actor."""
        import ray

        answers: list[Any] = [None] * len(jobs)
        todo = deque(range(len(jobs)))
        running: dict[Any, tuple[int, int, float]] = {}  # ref -> (job, slot, started)
        while todo or running:
            for _ in range(len(todo)):
                i = todo.popleft()
                slot = self._slot_for(jobs[i])
                if slot is None:
                    todo.append(i)
                    continue
                self.slots[slot].state = "busy"
                running[jobs[i].send(self.slots[slot].handle)] = (i, slot, time.monotonic())
            pings = {s.ping: s for s in self.slots if s.state == "starting"}
            waiting = list(running) + list(pings)
            if not waiting:
                self._check_alive()
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S)
            for ref in ready:
                if ref in pings:
                    self._on_ping(pings[ref])
                    continue
                i, slot, _ = running.pop(ref)
                try:
                    answers[i] = ray.get(ref)
                    self.slots[slot].state = "idle"
                except ray.exceptions.RayError as err:
                    self._job_failed(jobs[i], self.slots[slot], err)
                    todo.append(i)
            now = time.monotonic()
            for i, slot, started in running.values():
                if now - started > self.dist.shard_timeout_s and self.slots[slot].state == "busy":
                    print(f"warning: {jobs[i].what} ran longer than distributed."
                          f"shard_timeout_s={self.dist.shard_timeout_s:g}; restarting its "
                          "worker.", file=sys.stderr)
                    self.slots[slot].state = "killed"
                    ray.kill(self.slots[slot].handle, no_restart=False)
            if todo and not running:
                self._check_alive()
        return answers

    def _slot_for(self, job: _Job) -> int | None:
        """The idle actor for ``job`` now (None: wait). A pinned job whose actor is dead for
        good moves to the first live actor, which then owns its block."""
        if job.slot is not None:
            if self.slots[job.slot].state == "dead":
                live = [i for i, s in enumerate(self.slots) if s.state != "dead"]
                if not live:
                    self._check_alive()
                    return None
                for block, owner in self._owners.items():
                    if owner == job.slot:
                        self._owners[block] = live[0]
                job.slot = live[0]
            return job.slot if self.slots[job.slot].state == "idle" else None
        idle = [i for i, s in enumerate(self.slots) if s.state == "idle"]
        return idle[0] if idle else None

    def _job_failed(self, job: _Job, slot: _Slot, err: Exception) -> None:
        job.tries += 1
        where = f"worker pid {slot.info.get('pid', '?')} on {slot.info.get('node', '?')}"
        if job.tries > self.dist.max_retries:
            raise WorkerError(
                f"{job.what} failed {job.tries} times; the last try, on {where}, ended with: "
                f"{_summary(err)} distributed.max_retries sets the number of tries. The last "
                "checkpoint is intact: resume with 'vsml-es resume RUN_DIR'.")
        self.resent += 1
        print(f"warning: {job.what} failed on {where} ({_summary(err, 160)}); re-sending "
              f"(try {job.tries + 1} of {self.dist.max_retries + 1}).", file=sys.stderr)
        self._restart_wait(slot)

    # -- stragglers -----------------------------------------------------------------------------

    def _backup_after_s(self, gen: _Generation) -> float | None:
        """How long a shard may run before it gets a backup copy (None: not yet, or never)."""
        if self.dist.backup_after <= 0 or not gen.durations:
            return None
        return self.dist.backup_after * statistics.median(gen.durations)

    def _straggler(self, gen: _Generation) -> int | None:
        """The longest-running shard past the backup threshold that has no backup yet."""
        limit = self._backup_after_s(gen)
        if limit is None:
            return None
        now, copies = time.monotonic(), gen.copy_counts()
        alone = [s for s in gen.sent.values() if copies[s.shard] == 1
                 and not s.killed and now - s.started >= limit]
        return min(alone, key=lambda s: s.started).shard if alone else None

    def _wait_s(self, gen: _Generation) -> float:
        """Until the next shard crosses the backup threshold (if an actor is idle), at most
        POLL_S: the driver must look again then."""
        limit = self._backup_after_s(gen)
        if limit is None or gen.todo or not any(s.state == "idle" for s in self.slots):
            return POLL_S
        now, copies = time.monotonic(), gen.copy_counts()
        due = [s.started + limit - now for s in gen.sent.values()
               if copies[s.shard] == 1 and not s.killed]
        return min([POLL_S, *(max(0.001, d) for d in due)])

    # -- answers --------------------------------------------------------------------------------

    def _collect(self, gen: _Generation, ref: Any, sent: _Sent) -> None:
        import ray

        slot = self.slots[sent.slot]
        members = gen.shards[sent.shard]
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayError as err:
            self._retry(gen, sent, slot, err)  # even with a backup copy running: bounded
            return
        slot.state = "idle"
        fitness, accuracy = answer[0], answer[1]
        if sent.verify is not None:
            if answer[2] != sent.verify:
                self._recipe_mismatch(gen, sent, slot)
                return
            slot.verified = True
        gen.fitness[members] = fitness
        gen.accuracy[members] = accuracy
        gen.done.add(sent.shard)
        gen.durations.append(time.monotonic() - sent.started)
        self.bytes_received += fitness.nbytes + accuracy.nbytes
        self.backups_won += sent.backup
        for other, copy in list(gen.sent.items()):  # the losing copy keeps its actor busy
            if copy.shard == sent.shard:
                self._stale[other] = gen.sent.pop(other)

    def _drop_stale(self, ref: Any, sent: _Sent) -> None:
        """A copy whose shard another copy already answered: its actor is free again."""
        import ray

        slot = self.slots[sent.slot]
        try:
            ray.get(ref)
            slot.state = "idle"
        except ray.exceptions.RayError:
            self._restart_wait(slot)

    def _recipe_mismatch(self, gen: _Generation, sent: _Sent, slot: _Slot) -> None:
        """A worker redrew other bits than the driver drew: send members from now on."""
        where = f"worker pid {slot.info.get('pid', '?')} on {slot.info.get('node', '?')}"
        self.transfer = Choice("members", f"{where} redrew members that differ from "
                                        "the driver's (another CPU type or JAX build?)")
        self._log(f"warning: population transfer: members ({self.transfer.reason})")
        gen.recipe = None
        for other in list(gen.sent):  # copies of any shard sent as a recipe: send again
            self._stale[other] = gen.sent.pop(other)
        gen.todo = deque(i for i in range(len(gen.shards)) if i not in gen.done)

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
        """A copy past its timeout: restart its actor; the failure then re-sends the shard."""
        import ray

        now = time.monotonic()
        for sent in [*gen.sent.values(), *self._stale.values()]:
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
                "resent": self.resent, "backups": self.backups_won}

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
