"""Where populations are evaluated (in this process, or on Ray actors) and where sweep trials
run (Ray Tune).

The single choice point between the two evaluators, and the one door to the Ray adapter:
``distributed`` (the only package that imports Ray) is imported here and nowhere else in the
library, so deleting it leaves in-process evaluation working. A backend is opened once per
command, around all of its work: Ray starts before any dataset is loaded (no fork after heavy
JAX work) and stops on the way out, on errors and Ctrl-C too, so no Ray process outlives the
command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vsml_es.config import DistributedConfig
from vsml_es.errors import Report, UserError
from vsml_es.evaluator import EvalSpec, Evaluator, LocalEvaluator
from vsml_es.tasks import Data


class Backend:
    """Makes evaluators: in-process when ``distributed.workers`` is 0, else Ray actors."""

    def __init__(self, dist: DistributedConfig, ray_module: Any | None, log: Report):
        self.dist = dist
        self._ray = ray_module  # vsml_es.distributed, or None in-process
        self._log = log

    @property
    def uses_ray(self) -> bool:
        return self._ray is not None

    @contextmanager
    def evaluator(self, spec: EvalSpec, data: Data) -> Iterator[Evaluator]:
        """An evaluator for one meta-training run; its Ray actors stop with the block."""
        if self._ray is None:
            yield LocalEvaluator(spec, data)
            return
        evaluator = self._ray.RayEvaluator(spec, data, self.dist, log=self._log)
        self._log(f"evaluating on {evaluator.describe()}")
        try:
            yield evaluator
        finally:
            evaluator.close()


@contextmanager
def open_backend(dist: DistributedConfig, log: Report = print) -> Iterator[Backend]:
    """The backend ``dist`` asks for: in-process (workers 0), a private local Ray (loopback
    only), or the Ray cluster at ``dist.address``."""
    if dist.workers == 0:
        yield Backend(dist, None, log)
        return
    try:
        from vsml_es import distributed
    except ImportError as err:
        raise UserError(f"Ray evaluation is not available ({err}). Evaluate in this process "
                        "with --workers 0.") from None
    with distributed.ray_session(dist):
        yield Backend(dist, distributed, log)


def run_trials(dist: DistributedConfig, specs: dict[str, dict[str, Any]],
               fn: Callable[[dict[str, Any]], dict[str, Any]], storage: Path, *,
               cpus: float = 1.0, gpus: float = 0.0, concurrent: int | None = None,
               verbose: bool = False, log: Report = print) -> dict[str, str]:
    """``fn(spec)`` for every named spec as a Ray Tune trial, on the private local Ray or the
    cluster at ``dist.address``; returns the failed trials' errors by name (see
    :func:`vsml_es.distributed.trials.run_trials`)."""
    try:
        from vsml_es.distributed import trials
    except ImportError as err:
        raise UserError(f"Sweeps run on Ray Tune, which is not available ({err}).") from None
    return trials.run_trials(dist, specs, fn, storage,
                             trials.TrialResources(cpus, gpus, concurrent),
                             verbose=verbose, log=log)
