"""Online ES over truncated windows of long streams: the schedule, the noise, and the pool of
inner states that lives where it is computed (in-process, or on the Ray worker owning it).

A run has ``P / 2`` *particles*; each learns one stream of ``task.episode_length`` steps at a
time, as an antithetic pair of lanes (θ + σz and θ − σz) on the same examples, and advances
``training.window`` steps per generation. When its stream ends it starts a fresh one (new
examples, new learner states, and for NRES a new direction z).

Staggering: particle p starts ``o_p = floor(p · n / N)`` windows into its first stream
(n windows per stream, N particles), so at every generation the particles sit at evenly
spaced positions of their streams and resets are spread over the generations: every update
sees early and late steps alike. Even spacing rather than random offsets, because random
offsets leave some positions uncovered by chance when N is small. The first ``o_p`` windows
are a burn-in with the initial parameters, computed like any replay (below).

Everything about particle p at generation g is a pure function of (seed, p, g) and of the
means θ_w of the generations since its stream began: which stream it is on, its examples,
its learner's initial state, its noise. So its inner state need never travel: a worker that
lost it (killed, restarted, a resumed run) rebuilds it by *replaying* the windows since the
stream's start with the same compiled window function, bit for bit (lanes of a chunk are
independent, so the chunk a lane is replayed in does not change its bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import streams
from vsml_es.episodes import episode_live_outputs, masked_logits
from vsml_es.learners.base import Learner
from vsml_es.pytree import Params
from vsml_es.streams import stream_key
from vsml_es.tasks import Data, EpisodeSource

NOISE_KINDS = ("nres", "pes")


@dataclass(frozen=True)
class Layout:
    """How a flat meta-parameter vector maps to the learner's parameter pytree (hashable)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, params: Params) -> Layout:
        leaves, treedef = jax.tree.flatten(params)
        return cls(treedef, tuple(tuple(np.shape(x)) for x in leaves),
                   tuple(str(np.asarray(x).dtype) for x in leaves))

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def ravel(self, params: Params) -> jax.Array:
        return jnp.concatenate([jnp.ravel(x).astype(jnp.float32)
                                for x in jax.tree.leaves(params)])

    def unravel(self, flat: jax.Array) -> Params:
        leaves, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            n = int(np.prod(shape))
            leaves.append(flat[start:start + n].reshape(shape).astype(dtype))
            start += n
        return jax.tree.unflatten(self.treedef, leaves)


@dataclass(frozen=True)
class OnlineSpec:
    """The static settings of an online ES run: small and hashable, sent with every request."""

    kind: str  # nres | pes
    particles: int  # N = training.population_size / 2
    window: int  # K steps per generation (training.window)
    stream_length: int  # T steps per stream (task.episode_length)
    sigma: float
    seed: int
    chunk: int  # lanes per compiled call (training.eval_chunk, even: pairs stay together)
    layout: Layout

    @property
    def windows_per_stream(self) -> int:
        return self.stream_length // self.window

    def offset(self, p: np.ndarray | int) -> np.ndarray:
        return (np.asarray(p) * self.windows_per_stream) // self.particles

    def position(self, p: np.ndarray | int, generation: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream number, window index within the stream) of particles ``p`` at ``generation``
        (which may be negative: the burn-in before generation 0)."""
        u = generation + self.offset(p)
        return u // self.windows_per_stream, u % self.windows_per_stream

    def stream_start(self, p: np.ndarray | int, generation: int) -> np.ndarray:
        """The generation at which each particle's current stream began."""
        return generation - self.position(p, generation)[1]

    def noise_index(self, p: np.ndarray, generation: int) -> np.ndarray:
        """Which draw of its noise particle p uses at ``generation``: one per stream (NRES,
        noise reuse) or a fresh one per window (PES). Never negative."""
        stream, window = self.position(p, generation)
        if self.kind == "nres":
            return stream
        return stream * self.windows_per_stream + window


def lane_noise(seed: int, particles: np.ndarray, index: np.ndarray, size: int) -> jax.Array:
    """z ~ N(0, I) of each particle's ``index``-th draw, [len(particles), size]."""
    return _noise(jnp.int32(seed), jnp.asarray(particles, jnp.int32),
                  jnp.asarray(index, jnp.int32), size)


@partial(jax.jit, static_argnames=("size",))
def _noise(seed: jax.Array, particles: jax.Array, index: jax.Array, size: int) -> jax.Array:
    root = stream_key(seed, streams.ONLINE_NOISE)
    keys = jax.vmap(lambda p, i: jax.random.fold_in(jax.random.fold_in(root, p), i))(
        particles, index)
    return jax.vmap(lambda k: jax.random.normal(k, (size,), jnp.float32))(keys)


def stream_keys(seed: int, particles: np.ndarray, stream: np.ndarray) -> jax.Array:
    """The key of stream number ``stream`` of each particle: its examples and initial states."""
    return _stream_keys(jnp.int32(seed), jnp.asarray(particles, jnp.int32),
                        jnp.asarray(stream, jnp.int32))


@jax.jit
def _stream_keys(seed: jax.Array, particles: jax.Array, stream: jax.Array) -> jax.Array:
    root = stream_key(seed, streams.ONLINE_STREAMS)
    return jax.vmap(lambda p, s: jax.random.fold_in(jax.random.fold_in(root, p), s))(
        particles, stream)


def history_row(generation: int, windows_per_stream: int) -> int:
    """Where θ of ``generation`` sits in the ring of the last n means."""
    return generation % windows_per_stream


# -- the compiled window ------------------------------------------------------------------------


class Lanes(NamedTuple):
    """One chunk of lanes as the compiled window sees it (leading axis: lanes)."""

    z: jax.Array  # [C, D] noise
    sign: jax.Array  # [C] +1 / -1
    state: Any  # learner states
    spec: Any  # episode specs (the stream's examples and labels)
    t0: jax.Array  # [C] first step of this window in the stream (0: fresh states)


@lru_cache(maxsize=16)
def window_fn(learner: Learner, task: EpisodeSource, window: int, layout: Layout):
    """(theta, sigma, lanes, data) -> (states, mean loss [C], mean accuracy [C]) for one chunk
    of lanes: ``window`` online steps of each lane's stream from its ``t0`` and ``state``
    (fresh states at a stream's start are the pool's), with parameters theta + sign·sigma·z."""

    def lane(theta, sigma, z, sign, state, spec, t0, data):
        params = layout.unravel(theta + sign * sigma * z)
        live = episode_live_outputs(learner, task, spec)
        _, step = learner.make_for(params, task, live)

        def body(state, t):
            x, y = task.example(data, spec, t)
            state, logits = step(state, x, y)
            logits = masked_logits(logits, live)
            loss = -jax.nn.log_softmax(logits)[y]
            return state, (loss, (jnp.argmax(logits) == y).astype(jnp.float32))

        state, (losses, correct) = jax.lax.scan(body, state, t0 + jnp.arange(window))
        return state, jnp.mean(losses), jnp.mean(correct)

    def chunk(theta, sigma, lanes: Lanes, data):
        return jax.vmap(lane, in_axes=(None, None, 0, 0, 0, 0, 0, None))(
            theta, sigma, lanes.z, lanes.sign, lanes.state, lanes.spec, lanes.t0, data)

    return jax.jit(chunk)


@lru_cache(maxsize=16)
def _fresh_fn(learner: Learner, task: EpisodeSource, layout: Layout):
    """(theta, keys) -> (episode specs, initial learner states) of new streams, keys split
    as ``episodes.start_episode`` splits an episode's."""

    def one(theta, key):
        k_spec, k_learner = jax.random.split(key)
        spec = task.episode(k_spec)
        init, _ = learner.make_for(layout.unravel(theta), task, episode_live_outputs(
            learner, task, spec))
        return spec, init(k_learner)

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


# -- the pool -------------------------------------------------------------------------------------


class Missing(NamedTuple):
    """A pool's answer when it lacks states and was not given the means to rebuild them."""

    particles: np.ndarray


class WindowResult(NamedTuple):
    loss: np.ndarray  # [n, 2] mean window loss of lanes (+, -) of each particle
    accuracy: np.ndarray  # [n, 2]


class OnlinePool:
    """The inner states of some particles, kept between generations where they are computed.

    ``run(generation, theta, history)`` advances every particle one window. A particle whose
    state is not here (first call, a restarted worker, a resumed run) is rebuilt by replay from
    its stream's start, which needs ``history`` (θ of the last n generations, ring-indexed by
    ``history_row``); without it the pool answers :class:`Missing` and changes nothing.
    """

    def __init__(self, learner: Learner, task: EpisodeSource, online: OnlineSpec,
                 particles: np.ndarray):
        self.online = online
        self.particles = np.asarray(particles, np.int64)
        task = task.with_episode_length(online.stream_length)
        self._window = window_fn(learner, task, online.window, online.layout)
        self._fresh = _fresh_fn(learner, task, online.layout)
        self.valid_at = np.full(len(self.particles), np.iinfo(np.int64).min)  # state before g
        self.specs: Any = None  # per particle
        self.states: Any = None  # per lane: particle i's lanes are 2i (+) and 2i + 1 (-)

    def run(self, generation: int, theta: np.ndarray, history: np.ndarray | None,
            data: Data) -> WindowResult | Missing:
        o = self.online
        theta = jnp.asarray(theta, jnp.float32)
        start = o.stream_start(self.particles, generation)
        stale = (self.valid_at != generation) & (start < generation)
        if np.any(stale) and history is None:
            return Missing(self.particles[stale])
        if self.states is None:
            self._new_streams(np.arange(len(self.particles)), generation, theta)
        if np.any(stale):
            self._replay(np.flatnonzero(stale), start, generation, history, data)
        loss, accuracy = self._advance(np.arange(len(self.particles)), generation, theta, data)
        self.valid_at[:] = generation + 1
        return WindowResult(loss, accuracy)

    def _new_streams(self, rows: np.ndarray, generation: int, theta: jax.Array) -> None:
        """Streams that begin at ``generation`` for the particles in ``rows``: their examples
        and fresh states (both lanes start alike)."""
        o = self.online
        particles = self.particles[rows]
        stream, _ = o.position(particles, generation)
        specs, states = self._fresh(theta, stream_keys(o.seed, particles, stream))
        lanes = np.repeat(rows, 2) * 2 + np.tile([0, 1], len(rows))
        both = jax.tree.map(lambda a: jnp.repeat(a, 2, axis=0), states)
        if self.states is None:
            self.specs, self.states = specs, both
            return
        self.specs = _set_rows(self.specs, rows, specs)
        self.states = _set_rows(self.states, lanes, both)

    def _replay(self, rows: np.ndarray, start: np.ndarray, generation: int,
                history: np.ndarray, data: Data) -> None:
        """Rebuild the states of ``rows`` at the start of ``generation``: every window of their
        current streams so far, each with the θ that generation had."""
        n = self.online.windows_per_stream
        first = int(start[rows].min())
        for w in range(first, generation):
            due = rows[start[rows] <= w]
            if due.size:
                theta = jnp.asarray(history[history_row(w, n)], jnp.float32)
                self._advance(due, w, theta, data)

    def _advance(self, rows: np.ndarray, generation: int, theta: jax.Array,
                 data: Data) -> tuple[np.ndarray, np.ndarray]:
        """One window of generation ``generation`` for the particles in ``rows``, in chunks of
        ``online.chunk`` lanes (the last padded with copies of its last lane)."""
        o = self.online
        particles = self.particles[rows]
        stream, window = o.position(particles, generation)
        fresh = rows[window == 0]
        if fresh.size:
            self._new_streams(fresh, generation, theta)
        z = lane_noise(o.seed, particles, o.noise_index(particles, generation), o.layout.size)
        lanes = np.repeat(rows, 2) * 2 + np.tile([0, 1], len(rows))
        lane_rows = np.repeat(np.arange(len(rows)), 2)
        sign = np.tile(np.asarray([1.0, -1.0], np.float32), len(rows))
        t0 = (np.repeat(window, 2) * o.window).astype(np.int32)
        loss = np.zeros(len(lanes), np.float32)
        accuracy = np.zeros(len(lanes), np.float32)
        sigma = jnp.float32(o.sigma)
        for s in range(0, len(lanes), o.chunk):
            pick = np.minimum(np.arange(s, s + o.chunk), len(lanes) - 1)
            own = rows[lane_rows[pick]]
            chunk = Lanes(z[lane_rows[pick]], jnp.asarray(sign[pick]),
                          _rows(self.states, lanes[pick]), _rows(self.specs, own),
                          jnp.asarray(t0[pick]))
            states, l_chunk, a_chunk = self._window(theta, sigma, chunk, data)
            real = min(o.chunk, len(lanes) - s)
            self.states = _set_rows(self.states, lanes[s:s + real],
                                    jax.tree.map(lambda a, r=real: a[:r], states))
            loss[s:s + real] = np.asarray(l_chunk)[:real]
            accuracy[s:s + real] = np.asarray(a_chunk)[:real]
        return loss.reshape(-1, 2), accuracy.reshape(-1, 2)


def _rows(tree: Any, index: np.ndarray) -> Any:
    return jax.tree.map(lambda a: a[jnp.asarray(index)], tree)


def _set_rows(tree: Any, index: np.ndarray, values: Any) -> Any:
    return jax.tree.map(lambda a, v: a.at[jnp.asarray(index)].set(v), tree, values)


def particle_blocks(online: OnlineSpec, blocks: int) -> list[np.ndarray]:
    """The particles split into at most ``blocks`` contiguous blocks of whole chunks: a block
    lives on one worker. Blocks do not change what any lane computes."""
    per_chunk = max(1, online.chunk // 2)
    chunks = -(-online.particles // per_chunk)
    parts = np.array_split(np.arange(chunks), max(1, min(blocks, chunks)))
    return [np.arange(part[0] * per_chunk, min(online.particles, (part[-1] + 1) * per_chunk))
            for part in parts if part.size]
