"""Registry of meta-learned learners: name -> (init_params, make_learner).

Everything that runs episodes (the ES evaluator, Ray workers, meta-testing, checkpoints) goes
through this table, so a baseline meta-learner is trained with exactly the machinery, budget and
streams that VSML gets. ``model.learner`` picks the entry; parameters are flat dicts of arrays,
which is all the trainer, ES and the npz parameter files need.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import jax

from vsml_es import vsml
from vsml_es.baselines import fwm, hebbian, meta_rnn
from vsml_es.config import ConfigError, ModelConfig
from vsml_es.episodes import InitFn, StepFn, vsml_learner
from vsml_es.tasks import Task

Params = dict[str, jax.Array]


@dataclass(frozen=True)
class LearnerSpec:
    name: str
    label: str  # shown in tables and plots
    description: str
    init_params: Callable[[jax.Array, ModelConfig, int, int], Params]
    make_learner: Callable[[Params, ModelConfig, Task], tuple[InitFn, StepFn]]


LEARNERS: dict[str, LearnerSpec] = {
    s.name: s
    for s in (
        LearnerSpec(
            "vsml", "VSML", "every weight a tiny LSTM with shared meta-learned parameters",
            lambda key, model, f, o: vsml.init_params(key, model),
            vsml_learner,
        ),
        LearnerSpec(
            "hebbian", "Hebbian (Oja)", "plastic fast weights updated by Oja's rule",
            lambda key, model, f, o: hebbian.init_params(key, f, o),
            lambda params, model, task: hebbian.make_learner(params, task.num_outputs),
        ),
        LearnerSpec(
            "meta_rnn", "Meta-RNN", "LSTM fed the input, previous error and label",
            lambda key, model, f, o: meta_rnn.init_params(key, f, o, model.baseline_hidden),
            lambda params, model, task: meta_rnn.make_learner(params, task.num_outputs),
        ),
        LearnerSpec(
            "fwm", "FWM (delta rule)", "fast-weight memory written with the delta rule",
            lambda key, model, f, o: fwm.init_params(key, f, o, model.baseline_hidden),
            lambda params, model, task: fwm.make_learner(params, task.num_outputs),
        ),
    )
}


def learner_names() -> list[str]:
    return list(LEARNERS)


def get_learner(name: str) -> LearnerSpec:
    if name not in LEARNERS:
        raise ConfigError(_unknown("model.learner", name, LEARNERS))
    return LEARNERS[name]


def init_learner_params(
    key: jax.Array, model: ModelConfig, num_features: int, num_outputs: int
) -> Params:
    """Initial meta-parameters of ``model.learner`` for a task of this input/output size."""
    return get_learner(model.learner).init_params(key, model, num_features, num_outputs)


def make_learner(params: Params, model: ModelConfig, task: Task) -> tuple[InitFn, StepFn]:
    return get_learner(model.learner).make_learner(params, model, task)


def _unknown(path: str, name: str, valid: dict) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Config key '{path}' is '{name}'.{hint} Valid values: {', '.join(valid)}."


def validate_learners(
    learner: str, baselines: tuple[str, ...], compare_learners: tuple[str, ...]
) -> None:
    """Names in model.learner, metatest.baselines and compare.learners exist (before any work)."""
    from vsml_es.baselines.sgd import GRADIENT_BASELINES

    if learner not in LEARNERS:
        raise ConfigError(_unknown("model.learner", learner, LEARNERS))
    for i, name in enumerate(compare_learners):
        if name not in LEARNERS:
            raise ConfigError(_unknown(f"compare.learners[{i}]", name, LEARNERS))
    for i, name in enumerate(baselines):
        if name not in GRADIENT_BASELINES:
            raise ConfigError(_unknown(f"metatest.baselines[{i}]", name, GRADIENT_BASELINES))
