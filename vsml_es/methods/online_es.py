"""What NRES and PES share: ES on windows of long streams whose inner states persist across
generations (``vsml_es.online`` runs the windows, in-process or on the workers owning them).

Each generation every particle p advances its antithetic pair one window with θ ± σ z_p and
reports the two lanes' mean window losses L⁺_p, L⁻_p. The estimate of the gradient of the
loss is ĝ = Σ_p (L⁺_p − L⁻_p) w_p / (2σN), where w_p is what the method says (its file), and
the optimizer (training.optimizer, training.learning_rate) steps the mean.
``training.fitness_shaping`` shapes the differences (``shape_differences``): centred ranks are
scale-free, so windows early in a stream, whose losses move most, do not drown the late ones.
A pair with a non-finite loss contributes nothing (counted in the row's ``nonfinite``).

The state: the mean, the optimizer's state and the means of the last n generations (n
windows per stream), which is all a worker needs to rebuild any particle's inner state.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vsml_es.config import Config
from vsml_es.errors import ConfigError
from vsml_es.evaluator import EvalSpec
from vsml_es.methods.base import Row, metrics_row
from vsml_es.online import Layout, OnlineSpec
from vsml_es.pytree import Params


class OnlineES:
    """Base of the online estimators; a subclass says how each particle's direction is
    weighted (``directions``) and which noise its lanes use (``OnlineSpec.kind``)."""

    name: ClassVar[str] = ""
    hyperparams: Any = None

    def __init__(self, online: OnlineSpec, optimizer: optax.GradientTransformation,
                 shaping: str = "none"):
        self.online = online
        self.shaping = shaping
        self.optimizer = optimizer
        self.hyperparams = {}
        self._update = jax.jit(partial(_update, optimizer, online.sigma, online.particles,
                                       online.windows_per_stream))

    @classmethod
    def build(cls, config: Config, spec: EvalSpec, template: Params) -> OnlineES:
        tr = config.training
        online = OnlineSpec(kind=cls.name, particles=tr.population_size // 2,
                            window=tr.window, stream_length=config.task.episode_length,
                            sigma=tr.sigma, seed=tr.seed, chunk=tr.eval_chunk,
                            layout=Layout.of(template))
        optimizer = (optax.adam(tr.learning_rate, b1=0.9, b2=0.999) if tr.optimizer == "adam"
                     else optax.sgd(tr.learning_rate))
        return cls(online, optimizer, shaping=tr.fitness_shaping)

    @classmethod
    def validate(cls, config: Config) -> None:
        """Streams of whole windows, antithetic pairs that stay together in a chunk, and
        none of the options that draw episodes another way."""
        tr, t = config.training, config.task
        name = f"training.method {cls.name}"
        if tr.window < 1 or t.episode_length % tr.window:
            raise ConfigError(
                f"Config key 'training.window' is {tr.window}; with {name} it is the number "
                f"of steps each stream advances per generation and must divide "
                f"task.episode_length ({t.episode_length}), the stream length: e.g. "
                f"{_divisor_near(t.episode_length, 50)}.")
        for key, value in (("training.population_size", tr.population_size),
                           ("training.eval_chunk", tr.eval_chunk)):
            if value % 2:
                raise ConfigError(
                    f"Config key '{key}' is {value}; {name} evaluates antithetic pairs (two "
                    f"members per stream), so it must be even: use {value + 1}.")
        if t.fitness != "mean_loss":
            raise ConfigError(f"Config key 'task.fitness' is '{t.fitness}'; {name} minimizes "
                              "each window's mean online loss: use task.fitness: mean_loss.")
        if t.ways:
            raise ConfigError(f"Config key 'task.ways' is {t.ways}; few-shot episodes are one "
                              f"query long, with nothing to carry over: {name} needs "
                              "task.ways: 0 (or use training.method: es).")

    def directions(self, generation: int) -> jax.Array:
        """w_p of every particle at ``generation``, [N, D]."""
        raise NotImplementedError

    def init(self, params: Params) -> dict[str, Any]:
        flat = self.online.layout.ravel(params)
        return {"mean": flat, "opt": self.optimizer.init(flat),
                "history": jnp.tile(flat, (self.online.windows_per_stream, 1))}

    def mean(self, state: dict[str, Any]) -> Params:
        return self.online.layout.unravel(state["mean"])

    def step(self, state: dict[str, Any], generation: int,
             evaluator: Any) -> tuple[dict[str, Any], Row]:
        started = time.perf_counter()
        o = self.online
        result = evaluator.windows(o, generation, np.asarray(state["mean"]),
                                   np.asarray(state["history"]))
        loss = np.asarray(result.loss, np.float32)
        diff = loss[:, 0] - loss[:, 1]
        finite = np.isfinite(diff)
        diff = np.where(finite, diff, 0.0).astype(np.float32)
        diff = shape_differences(diff, self.shaping)
        new = self._update(state, jnp.asarray(diff), self.directions(generation),
                           jnp.int32(generation))
        _, window = o.position(np.arange(o.particles), generation)
        lanes = loss[np.isfinite(loss)]
        return new, metrics_row(
            generation, lanes if lanes.size else np.asarray([np.nan]), result.accuracy,
            started, float(jnp.linalg.norm(new["mean"])), int((~finite).sum()),
            streams_started=int(np.sum(window == 0)))


def shape_differences(diff: np.ndarray, shaping: str) -> np.ndarray:
    """The pairs' loss differences as ``training.fitness_shaping`` says: raw (auto, none),
    centred ranks in [-0.5, 0.5] (centered_rank, pair_rank: ranks of the differences are what
    ranking antithetic pairs means) or divided by their standard deviation (z_score; not
    centred, which would bias an antithetic estimate)."""
    if shaping in ("centered_rank", "pair_rank"):
        ranks = np.argsort(np.argsort(diff, kind="stable"), kind="stable")
        return (ranks / max(1, diff.size - 1) - 0.5).astype(np.float32)
    if shaping == "z_score":
        return (diff / max(float(np.std(diff)), 1e-12)).astype(np.float32)
    return diff


def _divisor_near(n: int, target: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - target))


def _update(optimizer: optax.GradientTransformation, sigma: float, particles: int,
            windows: int, state: dict[str, Any], diff: jax.Array, directions: jax.Array,
            generation: jax.Array) -> dict[str, Any]:
    grad = diff @ directions / (2.0 * sigma * particles)
    updates, opt = optimizer.update(grad, state["opt"], state["mean"])
    mean = optax.apply_updates(state["mean"], updates)
    history = state["history"].at[(generation + 1) % windows].set(mean)  # online.history_row
    return {"mean": mean, "opt": opt, "history": history}

