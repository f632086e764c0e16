"""Sweep trials on Ray Tune: Tune places them (this machine's private Ray, or a cluster).

Tune only schedules here. Each trial calls a plain function on a JSON-like spec (its run
directory and config), and that function is idempotent on its run directory; the caller reads
the results back from the run directories. Tune's own experiment state, which it writes with
pickle, is never restored (no ``Tuner.restore``): a rerun is a fresh ``Tuner`` whose trials find
their run directories finished, interrupted or new. Tune stays quiet unless ``verbose``: no
progress tables, no result loggers (JSON, CSV, TensorBoard) and no SIGINT handler of its own, so
Ctrl-C stops the sweep like any command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsml_es.config import DistributedConfig
from vsml_es.distributed import _prepare_environment, _summary, ray_session
from vsml_es.errors import ClusterError, Report, UserError

EXPERIMENT = "trials"  # OUT/tune/trials: Tune's bookkeeping of the last invocation only
_TUNE_LOGGERS = ("ray.tune", "ray.train", "ray.air")


@dataclass(frozen=True)
class TrialResources:
    """What each trial asks Tune for, and how many may run at once (None: as many as fit)."""

    cpus: float = 1.0
    gpus: float = 0.0
    concurrent: int | None = None


def _tune_environment() -> None:
    """Read by Tune when it is imported and when it runs: no result loggers of its own (the run
    directories hold the results), no SIGINT handler (Ctrl-C stops the sweep like any command,
    the rerun continues), the old console output (``verbose=0`` silences it), and trials keep the
    driver's working directory (relative paths in a config mean the same in a trial)."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"


@contextlib.contextmanager
def _quiet_tune(verbose: bool) -> Iterator[None]:
    """Tune logs every failed trial with a full traceback and a hint to ``Tuner.restore``;
    the caller reports failures itself, in one line each."""
    if verbose:
        yield
        return
    saved = {name: logging.getLogger(name).level for name in _TUNE_LOGGERS}
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _trainable(config: dict[str, Any], fn: Callable[[dict[str, Any]], dict[str, Any]],
               specs: dict[str, dict[str, Any]]) -> None:
    """The Tune function trainable: one trial = ``fn(spec)``, reported once."""
    from ray import tune

    tune.report(dict(fn(specs[config["trial"]])))


def _check_fits(resources: TrialResources, dist: DistributedConfig, log: Report) -> None:
    """A trial no node can hold would wait forever (Tune's own warning is silenced)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(r.get("CPU", 0) >= resources.cpus and r.get("GPU", 0) >= resources.gpus
           for r in nodes):
        return
    message = (f"Each trial asks for {resources.cpus:g} CPU(s) and {resources.gpus:g} GPU(s) "
               "(--cpus-per-trial, --gpus-per-trial), but no node of the Ray cluster has that "
               f"much ({', '.join(_node_text(r) for r in nodes) or 'no live node'}).")
    if dist.address is None:
        raise ClusterError(message + " Lower the request, or join a cluster with bigger nodes "
                           "through --ray-address.")
    log(f"warning: {message} Waiting for the autoscaler to add such a node.")


def _node_text(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPU(s) / {resources.get('GPU', 0):g} GPU(s)"


def run_trials(dist: DistributedConfig, specs: dict[str, dict[str, Any]],
               fn: Callable[[dict[str, Any]], dict[str, Any]], storage: Path,
               resources: TrialResources, *, verbose: bool = False,
               log: Report = print) -> dict[str, str]:
    """Run ``fn(spec)`` for every named spec as a Ray Tune trial; the errors by trial name.

    ``fn`` must be importable on every node (a module-level function of an installed package).
    ``storage`` receives Tune's bookkeeping (never ``~/ray_results``); it is replaced on every
    call, as nothing is ever restored from it.
    """
    if not specs:
        return {}
    _prepare_environment(dist.address)  # before the first ``import ray``
    _tune_environment()
    try:
        from ray import tune  # its own dependencies (pandas, pyarrow) come with ray[tune]
    except ImportError as err:
        raise UserError(f"Sweeps need Ray Tune, which cannot be imported here ({err}). "
                        "Install it with: pip install 'ray[tune]'") from None
    storage = Path(storage).absolute()
    shutil.rmtree(storage / EXPERIMENT, ignore_errors=True)
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        with ray_session(dist, log_to_driver=verbose), _quiet_tune(verbose):
            _restore_sigterm(on_term)
            _check_fits(resources, dist, log)
            names = list(specs)
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(_trainable, fn=fn, specs=specs),
                                    {"cpu": resources.cpus, "gpu": resources.gpus}),
                param_space={"trial": tune.grid_search(names)},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=resources.concurrent,
                    reuse_actors=True,  # one process runs trial after trial: JAX compiles once
                    trial_name_creator=lambda trial: trial.config["trial"],
                    trial_dirname_creator=lambda trial: trial.config["trial"],
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=str(storage), verbose=3 if verbose else 0,
                    failure_config=tune.FailureConfig(max_failures=0),  # the rerun resumes
                    callbacks=[_progress(log, len(names))],
                ),
            )
            grid = tuner.fit()
            return {result.config["trial"]: _summary(result.error)
                    for result in grid if result.error is not None}
    finally:
        _restore_sigterm(on_term)


def _restore_sigterm(handler: Any) -> None:
    """Ray's driver replaces SIGTERM with a crash handler (a stack dump, exit 1) and its
    shutdown with the default; keep the caller's, so a stopped sweep ends like a stopped run."""
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _progress(log: Report, total: int) -> Any:
    """A Tune callback logging one line per trial that ends (Tune's own tables are off unless
    --verbose). Defined on call: Ray may only be imported after ``ray_session`` set it up."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self) -> None:
            self.done = 0

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.done += 1
            log(f"[{self.done}/{total}] {trial.config['trial']}: "
                f"{(trial.last_result or {}).get('outcome', 'done')}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            log(f"[{self.done}/{total}] {trial.config['trial']}: failed")

    return Progress()
