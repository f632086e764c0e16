"""evosax strategies built from the config, with the checks that evosax only asserts.

evosax always minimizes; our fitness is a loss, so no sign flips anywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.algorithms import algorithms as ALGORITHMS
from evosax.core import fitness_shaping as shaping

from vsml_es.config import TrainingConfig
from vsml_es.errors import ConfigError, did_you_mean


def pair_rank_fitness_shaping_fn(population: Any, fitness: jax.Array, state: Any,
                                 params: Any) -> jax.Array:
    """Centered ranks of the antithetic differences f(θ+ε) − f(θ−ε), split ± over each pair.

    Partners see the same episode, so the difference cancels how hard that episode was. Ranks
    over the whole population instead let episode difficulty decide the order: with a mixture
    of datasets the partners of one pair rank next to each other and their rank difference,
    the only part that moves the mean, shrinks. Needs a mirrored strategy (checked at build).
    """
    half = fitness.shape[-1] // 2
    diff = fitness[..., :half] - fitness[..., half:]
    both = jnp.concatenate([diff, -diff], axis=-1)  # member i+P/2 gets the rank of -diff_i
    return shaping.centered_rank_fitness_shaping_fn(population, both, state, params)


SHAPING_FNS: dict[str, Callable] = {
    "none": shaping.identity_fitness_shaping_fn,
    "centered_rank": shaping.centered_rank_fitness_shaping_fn,
    "z_score": shaping.standardize_fitness_shaping_fn,
    "pair_rank": pair_rank_fitness_shaping_fn,
}
# Shapings that read the population as antithetic pairs (i, i + P/2).
PAIRED_SHAPINGS = ("pair_rank",)


def strategy_names() -> list[str]:
    return sorted(ALGORITHMS)


# evosax arguments that take objects vsml-es builds from config keys.
OBJECT_KWARGS = {
    "optimizer": "set training.optimizer (adam or sgd) and training.learning_rate",
    "std_schedule": "set training.sigma",
    "fitness_shaping_fn": "set training.fitness_shaping",
}


def _constructor_args(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _constructor_kwargs(training: TrainingConfig) -> dict[str, Any]:
    cls = ALGORITHMS[training.strategy]
    accepted = _constructor_args(cls)
    kwargs: dict[str, Any] = {}
    if "optimizer" in accepted:
        if training.optimizer == "adam":
            kwargs["optimizer"] = optax.adam(training.learning_rate, b1=0.9, b2=0.999)
        else:
            kwargs["optimizer"] = optax.sgd(training.learning_rate)
    if "std_schedule" in accepted:
        kwargs["std_schedule"] = optax.constant_schedule(training.sigma)
    if "fitness_shaping_fn" in accepted and training.fitness_shaping != "auto":
        kwargs["fitness_shaping_fn"] = SHAPING_FNS[training.fitness_shaping]
    elif "fitness_shaping_fn" in accepted and training.strategy == "Open_ES":
        kwargs["fitness_shaping_fn"] = SHAPING_FNS["none"]  # the paper used raw fitness
    kwargs.update(training.strategy_kwargs)
    return kwargs


def validate_strategy(training: TrainingConfig) -> None:
    """Name, constructor arguments and population size, checked before any work starts."""
    if training.strategy not in ALGORITHMS:
        hint = did_you_mean(training.strategy, ALGORITHMS)
        raise ConfigError(
            f"Unknown ES strategy '{training.strategy}' (training.strategy).{hint} Valid "
            f"strategies: {', '.join(strategy_names())}."
        )
    if training.fitness_shaping not in (*SHAPING_FNS, "auto"):
        raise ConfigError(
            f"Config key 'training.fitness_shaping' is '{training.fitness_shaping}'; valid "
            f"values: auto, {', '.join(SHAPING_FNS)}."
        )
    cls = ALGORITHMS[training.strategy]
    accepted = _constructor_args(cls) - {"population_size", "solution"}
    for key in training.strategy_kwargs:
        if key not in accepted:
            raise ConfigError(
                f"training.strategy_kwargs has '{key}', which {training.strategy} does not "
                f"accept. Accepted: {', '.join(sorted(accepted))}."
            )
        default = inspect.signature(cls.__init__).parameters[key].default
        if callable(default) or key.endswith(("_fn", "_schedule")) or key == "optimizer":
            instead = OBJECT_KWARGS.get(key, "leave it out (the default is used)")
            raise ConfigError(
                f"training.strategy_kwargs.{key} takes a Python object (a function or an "
                f"optimizer), which a config cannot hold; got {training.strategy_kwargs[key]!r}."
                f" Instead: {instead}."
            )
    try:
        algorithm = cls(population_size=training.population_size, solution=jnp.zeros(4),
                        **_constructor_kwargs(training))
    except AssertionError as err:
        even = "even" in str(err).lower()
        if even:
            p = training.population_size
            fix = f"{p + 1} or {p - 1}" if p > 1 else "2"
            raise ConfigError(
                f"training.population_size is {p}, but {training.strategy} uses antithetic "
                f"(mirrored) sampling and needs an even population. Use {fix}."
            ) from None
        raise ConfigError(
            f"{training.strategy} rejected the settings: {err or 'assertion failed'}."
        ) from None
    except Exception as err:  # third-party code given the user's keyword arguments
        raise ConfigError(f"{training.strategy} rejected training.strategy_kwargs: "
                          f"{type(err).__name__}: {err}") from None
    if training.strategy_kwargs:  # values evosax only trips over once it runs
        _dry_run(training, algorithm)
    if training.fitness_shaping in PAIRED_SHAPINGS:
        _require_mirrored(training, _detect_mirrored(algorithm, algorithm.default_params,
                                                     jnp.zeros(4)))


def _dry_run(training: TrainingConfig, algorithm: Any) -> None:
    """One init/ask/tell on a 4-parameter problem: bad keyword values fail here, not later."""
    try:
        key = jax.random.key(0)
        params = algorithm.default_params
        state = algorithm.init(key, jnp.zeros(4), params)
        population, state = algorithm.ask(key, state, params)
        fitness = jnp.arange(training.population_size, dtype=jnp.float32)
        state, _ = algorithm.tell(key, population, fitness, state, params)
        mean = jax.flatten_util.ravel_pytree(algorithm.get_mean(state))[0]
    except Exception as err:
        raise ConfigError(f"{training.strategy} failed with training.strategy_kwargs "
                          f"{training.strategy_kwargs}: {type(err).__name__}: {err}") from None
    if not bool(jnp.all(jnp.isfinite(mean))):
        raise ConfigError(f"{training.strategy} with training.strategy_kwargs "
                          f"{training.strategy_kwargs} produced a non-finite mean in one step.")


def _require_mirrored(training: TrainingConfig, mirrored: bool) -> None:
    if training.fitness_shaping in PAIRED_SHAPINGS and not mirrored:
        raise ConfigError(
            f"training.fitness_shaping '{training.fitness_shaping}' ranks antithetic pairs, "
            f"but {training.strategy} does not sample mirrored pairs. Use a mirrored strategy "
            "(e.g. Open_ES) or another shaping: centered_rank, z_score, none."
        )


@dataclass
class Strategy:
    """An evosax algorithm with its params and the pairing of its population."""

    algorithm: Any
    params: Any
    mirrored: bool  # members i and i + P/2 are an antithetic pair

    @property
    def population_size(self) -> int:
        return self.algorithm.population_size

    def episode_ids(self) -> np.ndarray:
        """Episode id of each member: antithetic partners share one (common random numbers)."""
        p = self.population_size
        ids = np.arange(p, dtype=np.int32)
        return ids % (p // 2) if self.mirrored else ids

    def pairs(self) -> list[list[int]]:
        """Groups of member indices that must be evaluated together (never split)."""
        p = self.population_size
        if self.mirrored:
            return [[i, i + p // 2] for i in range(p // 2)]
        return [[i] for i in range(p)]


# Algorithms built in this process, by what defines them. evosax jits ask/tell with the
# algorithm object as a static argument (hashed by identity): a new object per Trainer would
# compile them again for every run of a sweep, compare or test session.
_BUILT: dict[tuple[Any, ...], tuple[Any, bool]] = {}


def _algorithm_key(training: TrainingConfig, template: Any) -> tuple[Any, ...]:
    """What an evosax algorithm depends on: its settings and the template's shapes (evosax
    reads only the template's structure, to ravel and unravel members)."""
    shapes = tuple((np.shape(x), str(np.asarray(x).dtype)) for x in jax.tree.leaves(template))
    settings = (training.strategy, training.population_size, training.optimizer,
                training.learning_rate, training.sigma, training.fitness_shaping,
                repr(sorted(training.strategy_kwargs.items())))
    return settings, jax.tree.structure(template), shapes


def build_strategy(training: TrainingConfig, template: Any) -> Strategy:
    key = _algorithm_key(training, template)
    if key not in _BUILT:
        cls = ALGORITHMS[training.strategy]
        algorithm = cls(population_size=training.population_size, solution=template,
                        **_constructor_kwargs(training))
        if len(_BUILT) >= 16:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = algorithm, _detect_mirrored(algorithm, _params(algorithm, training),
                                                  template)
    algorithm, mirrored = _BUILT[key]
    _require_mirrored(training, mirrored)
    return Strategy(algorithm, _params(algorithm, training), mirrored)


def _params(algorithm: Any, training: TrainingConfig) -> Any:
    params = algorithm.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=training.sigma)
    return params


def strongly_typed(tree: Any) -> Any:
    """``tree`` with no weakly typed leaf. evosax's init returns weakly typed scalars (the
    generation counter, the best fitness, std) and tell strongly typed ones, so without this
    jit compiles ask and tell a second time at generation 1."""
    return jax.tree.map(
        lambda x: jnp.array(x, dtype=x.dtype) if getattr(x, "weak_type", False) else x, tree)


def _detect_mirrored(algorithm: Any, params: Any, template: Any) -> bool:
    """Ask once from a throwaway state and look: is the second half the first half mirrored?"""
    p = algorithm.population_size
    if p % 2:
        return False
    key = jax.random.key(0)
    state = strongly_typed(algorithm.init(key, template, params))  # the types training uses
    population, _ = algorithm.ask(key, state, params)
    flat = jax.vmap(lambda x: jax.flatten_util.ravel_pytree(x)[0])(population)
    mean = jax.flatten_util.ravel_pytree(template)[0]
    offsets = np.asarray(flat - mean)
    half = p // 2
    return bool(np.allclose(offsets[:half], -offsets[half:], atol=1e-5, rtol=1e-4))


def sanitize_fitness(fitness: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN/inf never reaches ``tell``: such members count as the worst finite fitness."""
    fitness = np.asarray(fitness, dtype=np.float32)
    bad = ~np.isfinite(fitness)
    count = int(bad.sum())
    if count:
        finite = fitness[~bad]
        worst = float(finite.max()) if finite.size else 0.0
        fitness = np.where(bad, worst, fitness).astype(np.float32)
    return fitness, count
