"""Every learner behind one interface (``base.Learner``), and the registry that names them.

``model.learner`` and ``compare.learners`` name *meta-learned* learners (ES finds their
parameters); ``metatest.baselines`` names *tuned* learners (hand-designed optimizers whose
learning rate is chosen on meta-training streams). A researcher's own learner is one
:func:`register_learner` call away (docs/architecture.md has a worked example).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vsml_es.config import Config
from vsml_es.errors import ConfigError, unknown_choice
from vsml_es.learners.base import InitFn, Learner, Params, StepFn
from vsml_es.learners.conv_gradient import ConvGradientLearner
from vsml_es.learners.fwm import FwmLearner
from vsml_es.learners.gradient import GradientLearner, learning_rate_grid
from vsml_es.learners.hebbian import HebbianLearner
from vsml_es.learners.meta_rnn import MetaRnnLearner
from vsml_es.learners.vsml import VsmlLearner

__all__ = ["InitFn", "Learner", "LearnerEntry", "Params", "StepFn", "build_learner",
           "get_entry", "register_learner", "size_free_names", "validate_learner_names"]


@dataclass(frozen=True)
class LearnerEntry:
    """A registered learner: how to build it from the experiment config, and how it is fit.

    ``candidates`` is None for a meta-learned learner; for a tuned one it gives the parameter
    sets (learning rates) to choose from on meta-training streams.
    """

    name: str
    description: str
    build: Callable[[Config], Learner]
    candidates: Callable[[Config], tuple[Params, ...]] | None = None

    @property
    def meta_learned(self) -> bool:
        return self.candidates is None


LEARNERS: dict[str, LearnerEntry] = {}


def register_learner(entry: LearnerEntry, *, replace: bool = False) -> LearnerEntry:
    """Add a learner under ``entry.name`` (then usable in every config key that names one)."""
    if entry.name in LEARNERS and not replace:
        raise ValueError(f"a learner named '{entry.name}' is already registered")
    LEARNERS[entry.name] = entry
    return entry


def get_entry(name: str, path: str = "model.learner") -> LearnerEntry:
    if name not in LEARNERS:
        raise ConfigError(unknown_choice(f"Config key '{path}'", name, LEARNERS))
    return LEARNERS[name]


def build_learner(name: str, config: Config) -> Learner:
    """The learner ``name`` with the static settings that ``config`` gives it."""
    return get_entry(name).build(config)


def validate_learner_names(config: Config) -> None:
    """model.learner and compare.learners are meta-learned, metatest.baselines tuned (up front)."""
    meta = [n for n, e in LEARNERS.items() if e.meta_learned]
    tuned = [n for n, e in LEARNERS.items() if not e.meta_learned]
    named = [("model.learner", config.model.learner, meta)]
    named += [(f"compare.learners[{i}]", n, meta) for i, n in enumerate(config.compare.learners)]
    named += [(f"metatest.baselines[{i}]", n, tuned)
              for i, n in enumerate(config.metatest.baselines)]
    for path, name, valid in named:
        if name not in valid:
            raise ConfigError(unknown_choice(f"Config key '{path}'", name, valid))


def _grid(optimizer: str) -> Callable[[Config], tuple[Params, ...]]:
    def candidates(config: Config) -> tuple[Params, ...]:
        mt = config.metatest
        return learning_rate_grid(mt.sgd_learning_rates if optimizer == "sgd"
                                  else mt.adam_learning_rates)

    return candidates


for _entry in (
    LearnerEntry("vsml", "every weight a tiny LSTM with shared meta-learned parameters",
                 lambda c: VsmlLearner(c.model)),
    LearnerEntry("hebbian", "plastic fast weights updated by Oja's rule",
                 lambda c: HebbianLearner()),
    LearnerEntry("meta_rnn", "LSTM fed the input, previous error and label",
                 lambda c: MetaRnnLearner(c.model.baseline_hidden)),
    LearnerEntry("fwm", "fast-weight memory written with the delta rule",
                 lambda c: FwmLearner(c.model.baseline_hidden)),
    LearnerEntry("sgd", "online SGD, linear", lambda c: GradientLearner("sgd"), _grid("sgd")),
    LearnerEntry("adam", "online Adam, linear", lambda c: GradientLearner("adam"), _grid("adam")),
    LearnerEntry("sgd_mlp", "online SGD, one hidden ReLU layer of metatest.mlp_hidden",
                 lambda c: GradientLearner("sgd", c.metatest.mlp_hidden), _grid("sgd")),
    LearnerEntry("adam_mlp", "online Adam, one hidden ReLU layer of metatest.mlp_hidden",
                 lambda c: GradientLearner("adam", c.metatest.mlp_hidden), _grid("adam")),
    LearnerEntry("sgd_conv", "online SGD, the official 3-conv baseline network (images)",
                 lambda c: ConvGradientLearner("sgd"), _grid("sgd")),
    LearnerEntry("adam_conv", "online Adam, the official 3-conv baseline network (images; "
                 "official sgd_omniglot.yaml)", lambda c: ConvGradientLearner("adam"),
                 _grid("adam")),
):
    register_learner(_entry)


def size_free_names(config: Config, learners: tuple[str, ...]) -> tuple[str, ...] | None:
    """Those of ``learners`` that run at any input size (their parameters do not depend on
    it), or None when none does. The meta-test baselines (SGD/Adam) always do."""
    names = tuple(n for n in learners if build_learner(n, config).size_free)
    return names or None
