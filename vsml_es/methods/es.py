"""``training.method: es``: full-episode ES through an evosax strategy (antithetic Open_ES by
default): every generation each member learns a fresh ``task.episode_length``-step episode
from scratch and its mean online loss is its fitness."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

import jax
import numpy as np

from vsml_es import streams
from vsml_es.config import Config
from vsml_es.es import Strategy, build_strategy, sanitize_fitness, strongly_typed
from vsml_es.evaluator import AskRecipe, EvalSpec, Evaluation
from vsml_es.methods.base import Row, metrics_row
from vsml_es.pytree import Params
from vsml_es.streams import stream_key


class FullEpisodeES:
    name: ClassVar[str] = "es"

    def __init__(self, strategy: Strategy, seed: int):
        self.strategy = strategy
        self.episode_ids = strategy.episode_ids()
        self._root = stream_key(seed, streams.ES)

    @classmethod
    def build(cls, config: Config, spec: EvalSpec, template: Params) -> FullEpisodeES:
        return cls(build_strategy(config.training, template), config.training.seed)

    @classmethod
    def validate(cls, config: Config) -> None:
        """The strategy's own checks run for every config (``es.validate_strategy``)."""

    @property
    def hyperparams(self) -> Any:
        return self.strategy.params

    @hyperparams.setter
    def hyperparams(self, value: Any) -> None:
        self.strategy.params = value

    def init(self, params: Params) -> Any:
        es = self.strategy
        return strongly_typed(es.algorithm.init(self._root, params, es.params))

    def mean(self, state: Any) -> Params:
        return self.strategy.algorithm.get_mean(state)

    def step(self, state: Any, generation: int, evaluator: Any) -> tuple[Any, Row]:
        es = self.strategy
        started = time.perf_counter()
        k_ask, k_tell = jax.random.split(jax.random.fold_in(self._root, generation))
        population, new_state = es.algorithm.ask(k_ask, state, es.params)
        result = _evaluate(evaluator, AskRecipe(es.algorithm, k_ask, state, es.params),
                           population, generation, self.episode_ids)
        fitness, nonfinite = sanitize_fitness(result.fitness)
        new_state, _ = es.algorithm.tell(k_tell, population, fitness, new_state, es.params)
        new_state = strongly_typed(new_state)  # tell may return weak scalars: one compile only
        if nonfinite:
            print(f"warning: generation {generation}: {nonfinite} member(s) had NaN/inf "
                  "fitness; counted as the worst fitness of the generation.", file=sys.stderr)
        norm = (float(np.linalg.norm(np.asarray(new_state.mean)))
                if hasattr(new_state, "mean") else float("nan"))
        shown = fitness if nonfinite < fitness.size else np.full_like(fitness, np.nan)
        return new_state, metrics_row(generation, shown, result.accuracy, started, norm,
                                      nonfinite)  # NaN when no member had a finite fitness


def _evaluate(evaluator: Any, recipe: AskRecipe, population: Any, generation: int,
              episode_ids: np.ndarray) -> Evaluation:
    """With the recipe where the evaluator can use it (workers redraw the members)."""
    asked = getattr(evaluator, "evaluate_asked", None)
    if asked is not None:
        return asked(recipe, population, generation, episode_ids)
    return evaluator.evaluate(population, generation, episode_ids)
