"""What imitation and backprop share: Adam on gradients through the unrolled inner loop,
``training.population_size`` episodes per step, computed per chunk of ``training.eval_chunk``
episodes (in-process, or one chunk per task on the Ray workers) and summed on the driver in
chunk order, so the update is the same bits however many workers computed it."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vsml_es.config import Config
from vsml_es.errors import ConfigError
from vsml_es.evaluator import EvalSpec, GradientChunk
from vsml_es.imitation import Imitation, apply_gradients, build_imitation
from vsml_es.methods.base import Row, metrics_row
from vsml_es.multisize import single_size
from vsml_es.pytree import Params


class GradientMethod:
    name: ClassVar[str] = ""

    def __init__(self, imitation: Imitation, chunk: int):
        self.imitation = imitation
        self.chunk = chunk
        self.hyperparams = {}

    @classmethod
    def build(cls, config: Config, spec: EvalSpec, template: Params) -> GradientMethod:
        imitation = build_imitation(config.training, spec.learner, single_size(spec.task),
                                    config.task.fitness)
        return cls(imitation, config.training.eval_chunk)

    @classmethod
    def validate(cls, config: Config) -> None:
        if config.model.learner != "vsml":
            raise ConfigError(f"training.method '{cls.name}' trains VSML (model.learner: "
                              f"vsml); got model.learner '{config.model.learner}'.")

    def init(self, params: Params) -> dict[str, Any]:
        return self.imitation.init(params)

    def mean(self, state: dict[str, Any]) -> Params:
        return state["params"]

    def chunks(self, state: dict[str, Any]) -> list[GradientChunk]:
        """The batch's episodes in chunks of ``chunk`` (the last padded, its padding weighing 0),
        each with its carried episodes (``training.imitation_horizon``)."""
        b = self.imitation.population_size
        out = []
        for s in range(0, b, self.chunk):
            pick = np.minimum(np.arange(s, s + self.chunk), b - 1)
            weights = (np.arange(s, s + self.chunk) < b).astype(np.float32)
            carries = (jax.tree.map(lambda a, p=pick: a[jnp.asarray(p)], state["episodes"])
                       if "episodes" in state else None)
            out.append(GradientChunk(pick.astype(np.int32), weights, carries))
        return out

    def step(self, state: dict[str, Any], generation: int,
             evaluator: Any) -> tuple[dict[str, Any], Row]:
        started = time.perf_counter()
        chunks = self.chunks(state)
        results = evaluator.gradients(self.imitation, state["params"], generation, chunks)
        loss, acc, grads = results[0].loss, results[0].accuracy, results[0].grads
        for r in results[1:]:  # in chunk order: the same sums wherever the chunks ran
            loss, acc = loss + r.loss, acc + r.accuracy
            grads = jax.tree.map(jnp.add, grads, r.grads)
        b = self.imitation.population_size
        loss, acc = float(loss) / b, float(acc) / b
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"generation {generation}: the meta-loss is {loss}; lower "
                "training.learning_rate (or training.imitation_learning_rate) and resume from "
                "the last checkpoint.")
        new = apply_gradients(self.imitation, state, grads)
        if "episodes" in state:
            new["episodes"] = jax.tree.map(
                lambda *parts: jnp.concatenate(parts)[:b],
                *[r.carries for r in results])
        norm = float(optax.tree.norm(new["params"]))
        return new, metrics_row(generation, np.asarray([loss]), np.asarray([acc]), started,
                                norm)
