"""Meta-training methods, one file each, chosen by ``training.method``.

Adding one: a file with a class that has the ``Method`` interface (``base.py``) and a
``build(config, spec, template)`` classmethod, and its line in ``METHODS``.
"""

from __future__ import annotations

from vsml_es import streams
from vsml_es.config import Config
from vsml_es.evaluator import EvalSpec
from vsml_es.methods.backprop import BackpropMethod
from vsml_es.methods.base import Method, Row, metrics_row
from vsml_es.methods.es import FullEpisodeES
from vsml_es.methods.imitation import ImitationMethod
from vsml_es.methods.nres import NoiseReuseES
from vsml_es.methods.pes import PersistentES
from vsml_es.pytree import Params
from vsml_es.streams import stream_key

METHODS: dict[str, type] = {
    "es": FullEpisodeES,
    "nres": NoiseReuseES,
    "pes": PersistentES,
    "imitation": ImitationMethod,
    "backprop": BackpropMethod,
}

__all__ = ["METHODS", "Method", "Row", "build_method", "initial_params", "metrics_row"]


def initial_params(config: Config, spec: EvalSpec) -> Params:
    """The learner's random initial parameters: a fresh run's start without a warm start,
    and the shapes of every run's method state."""
    task = spec.task
    return spec.learner.init_params(stream_key(config.training.seed, streams.INIT),
                                    task.num_features, task.num_outputs)


def build_method(config: Config, spec: EvalSpec) -> Method:
    """The method ``training.method`` names, built once for a run."""
    return METHODS[config.training.method].build(config, spec, initial_params(config, spec))
