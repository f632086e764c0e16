"""The one interface of a meta-training method: a meta-gradient estimator over a state pytree.

A method is built once (``vsml_es.methods.build_method``) and handed to the trainer, which
only ever calls what is here, whatever the method: ``init`` gives generation 0's state,
``step`` one generation's update, ``mean`` the meta-learned parameters. The state is one
pytree (checkpointed and restored bit for bit as it is), and ``hyperparams`` whatever else a
checkpoint must keep (evosax's params; nothing for the others).

Work is done through the evaluator it is given (``vsml_es.evaluator.Evaluator``): populations
of members (full-episode ES), windows of long streams (online ES) or gradient chunks
(imitation, backprop), in-process or on Ray workers alike.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Protocol

import numpy as np

from vsml_es.pytree import Params

Row = dict[str, Any]


class Method(Protocol):
    name: ClassVar[str]
    hyperparams: Any  # restored from a checkpoint beside the state (evosax params, or {})

    def init(self, params: Params) -> Any:
        """The state of generation 0 around ``params`` (a warm start or the random template)."""
        ...

    def mean(self, state: Any) -> Params:
        """The meta-learned parameters of ``state``."""
        ...

    def step(self, state: Any, generation: int, evaluator: Any) -> tuple[Any, Row]:
        """Generation ``generation``'s update: the new state and its metrics row."""
        ...


def metrics_row(generation: int, losses: np.ndarray, accuracy: np.ndarray, started: float,
                mean_norm: float = math.nan, nonfinite: int = 0, **extra: Any) -> Row:
    """The metrics log's row, the same columns for every method (fitness = the loss
    minimized: a member's, a lane's or the batch's)."""
    losses = np.asarray(losses, np.float64)
    return {"generation": generation, "fitness_mean": float(np.mean(losses)),
            "fitness_min": float(np.min(losses)), "fitness_max": float(np.max(losses)),
            "accuracy_mean": float(np.nanmean(accuracy)), "nonfinite": nonfinite,
            "mean_norm": mean_norm, **extra,
            "seconds": time.perf_counter() - started, "wall_time": time.time()}
