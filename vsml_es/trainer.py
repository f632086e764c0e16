"""The meta-training loop: one method step per generation, checkpoints, metrics, signals.

The method (``vsml_es.methods``: full-episode ES, NRES, PES, imitation, backprop) is built
once and only its interface is used here. All randomness of generation g derives from
(seed, g), so a generation can be replayed from the method's state alone: that is what makes
resume exact and results independent of the workers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from vsml_es import streams
from vsml_es.config import Config, config_to_dict
from vsml_es.errors import CheckpointError, DivergedError, Report, ResumeError
from vsml_es.es import strongly_typed
from vsml_es.evaluator import EvalSpec, Evaluator, LocalEvaluator, build_eval_spec
from vsml_es.learners import Params
from vsml_es.methods import Method, build_method, initial_params
from vsml_es.metrics import MetricsLog
from vsml_es.paths import mark_run_dir
from vsml_es.resume import ResumePlan, rewind
from vsml_es.runs import write_status
from vsml_es.signals import GenerationAbandoned, StopSignals, TrainingInterrupted
from vsml_es.storage.atomic import atomic_write_bytes
from vsml_es.storage.checkpoint import Checkpoint, Snapshot, prune, save_checkpoint
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.storage.params import save_params
from vsml_es.streams import stream_key
from vsml_es.tasks import Data
from vsml_es.tracking import open_trackers


@dataclass
class TrainState:
    generation: int  # generations completed
    es_state: Any


class Trainer:
    """Owns the method, the evaluator and the run directory of one meta-training run."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        evaluator: Evaluator | None = None,
        spec: EvalSpec | None = None,
        data: Data | None = None,
        method: Method | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if spec is None or data is None:
            spec, data = build_eval_spec(config)
        self.spec, self.data = spec, data
        self.evaluator = evaluator or LocalEvaluator(spec, data)
        # Random initial parameters: the start of a fresh run without a warm start, and the
        # structure of every run's ES state (a warm start file has the same, checked by
        # experiment.validate, and is read only when a run starts: resuming does not need it).
        self.template = initial_params(config, spec)
        self.method = method or build_method(config, spec)
        self._es_root = stream_key(config.training.seed, streams.ES)
        self.last_row: dict[str, Any] = {}
        self._checkpointed: int | None = None  # generation of the newest checkpoint on disk

    # -- state -------------------------------------------------------------------------------

    def initial_state(self) -> TrainState:
        """Generation 0: the ES state around the warm start file's parameters, if any."""
        warm = self.config.training.init_params
        start = (self.spec.learner.warm_start(
            read_learner_file(Path(self.config.training.init_params_path()))[0], self.template)
            if warm else self.template)
        return TrainState(generation=0, es_state=self.method.init(start))

    def mean_params(self, state: TrainState) -> Params:
        return self.method.mean(state.es_state)

    def restore(self, checkpoint: Checkpoint) -> TrainState:
        """Continue exactly where ``checkpoint`` stopped: method state and hyperparameters,
        RNG key."""
        es_state = strongly_typed(checkpoint.es_state(self.method.init(self.template)))
        self.method.hyperparams = checkpoint.es_params(self.method.hyperparams)
        saved_key = jax.random.key_data(checkpoint.rng_key())
        if not np.array_equal(saved_key, jax.random.key_data(self._es_root)):
            raise CheckpointError(
                f"its ES key differs from this run's (checkpoint PRNG "
                f"'{checkpoint.meta.get('rng_key_impl')}', this process "
                f"'{jax.random.key_impl(self._es_root)}'): resume with the JAX PRNG settings "
                "the run was started with"
            )
        self._checkpointed = checkpoint.generation
        return TrainState(checkpoint.generation, es_state)

    def resume_from(self, plan: ResumePlan, log: Report = print) -> TrainState | None:
        """Load the plan's checkpoint (None: start over) and cut the metrics logs back to it."""
        state = None
        if plan.checkpoint is not None:
            try:
                state = self.restore(plan.checkpoint)
            except CheckpointError as err:
                raise ResumeError(f"Cannot resume from {plan.checkpoint.path}: {err}.") from None
            log(f"resuming from generation {state.generation} ({plan.checkpoint.path})")
        rewind(self.run_dir, plan.checkpoint)
        return state

    def run_info(self) -> dict[str, Any]:
        """What a parameter file or checkpoint must carry to be used without the dataset."""
        task = self.spec.task
        return {
            "config": config_to_dict(self.config),
            "num_features": task.num_features,
            "num_outputs": task.num_outputs,
            "example_shape": list(task.input_shape),  # one preprocessed example, unflattened
            # Statistics behind task.preprocess.normalize='dataset' (one entry per dataset;
            # the class subsets of one dataset are parts with the same statistics).
            "input_stats": list({part.name: {"dataset": part.name, "mean": part.mean,
                                             "std": part.std} for part in task.parts}.values()),
        }

    def save_checkpoint(self, state: TrainState, log: MetricsLog) -> Path:
        """Checkpoint ``state`` with the metrics position it matches; keep the last K + best."""
        snapshot = Snapshot(
            generation=state.generation,
            es_state=state.es_state,
            es_params=self.method.hyperparams,
            rng_key=self._es_root,
            mean_params=self.mean_params(state),
            info={**self.run_info(), "metrics_position": log.position(),
                  "fitness": self.last_row.get("fitness_mean")},
        )
        path = save_checkpoint(self.run_dir, snapshot)
        self._checkpointed = state.generation
        ckpt = self.config.checkpoint
        prune(self.run_dir, ckpt.keep, ckpt.keep_best)
        return path

    # -- one generation ------------------------------------------------------------------------

    def step(self, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        g = state.generation
        es_state, row = self.method.step(state.es_state, g, self.evaluator)
        mean = jax.tree.leaves(self.method.mean(es_state))
        if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in mean):
            raise DivergedError(  # the last finite generation is checkpointed on the way out
                f"Meta-training diverged at generation {g}: the meta-parameters became NaN or "
                "infinite. Lower training.learning_rate (or training.sigma) and start a new "
                "run; the generations before are checkpointed ('vsml-es export RUN_DIR "
                "--checkpoint best' exports them).")
        return TrainState(g + 1, es_state), row

    # -- the loop --------------------------------------------------------------------------------

    def run(self, state: TrainState | None = None, progress: bool | None = None) -> TrainState:
        """Train to ``training.generations``; checkpoint every ``checkpoint.every`` and at the end.

        On SIGTERM/SIGINT the generation in flight finishes (a second signal abandons it), the
        last completed generation is checkpointed and :class:`TrainingInterrupted` is raised.
        """
        state = state or self.initial_state()
        total = self.config.training.generations
        every = self.config.checkpoint.every
        self.write_config()
        trackers = open_trackers(self.config.logging, self.run_dir, state.generation,
                                 config_to_dict(self.config))
        write_status(self.run_dir, "running", state.generation)
        log = MetricsLog(self.run_dir)
        bar = _ProgressBar(total, state.generation, progress, self.config.logging.progress)
        with StopSignals() as stop:
            try:
                while state.generation < total and stop.requested is None:
                    with stop.abandonable():
                        new_state, row = self.step(state)
                    g = new_state.generation
                    if g % self.config.logging.log_every == 0 or g == total:
                        log.write(row)
                        trackers.log(row, self.evaluator.status())
                    state, self.last_row = new_state, row
                    bar.update(row, self.evaluator.status())
                    if g % every == 0 or g == total:
                        self.save_checkpoint(state, log)
            except GenerationAbandoned:
                pass
            except BaseException as err:
                self._save_on_crash(state, log)
                log.close()
                trackers.close()
                crashed = not isinstance(err, KeyboardInterrupt)
                write_status(self.run_dir, "crashed" if crashed else "interrupted",
                             state.generation)
                raise
            finally:
                bar.close()
            path = None
            if self._checkpointed != state.generation:
                path = self.save_checkpoint(state, log)
            log.close()
            trackers.close()
            if stop.requested is not None:
                write_status(self.run_dir, "interrupted", state.generation)
                raise TrainingInterrupted(stop.requested, state.generation, path)
        self.save_final(state)
        write_status(self.run_dir, "finished", state.generation)
        return state

    def _save_on_crash(self, state: TrainState, log: MetricsLog) -> None:
        """Best effort: keep the last completed generation when something else went wrong."""
        if self._checkpointed == state.generation:
            return
        try:
            path = self.save_checkpoint(state, log)
            print(f"saved checkpoint {path} before stopping", file=sys.stderr)
        except Exception as err:  # the original error matters more than this one
            print(f"warning: could not save a checkpoint while stopping: {err}", file=sys.stderr)

    def write_config(self) -> None:
        write_run_config(self.run_dir, self.config)

    def save_final(self, state: TrainState) -> Path:
        path = self.run_dir / "params.npz"
        save_params(
            path,
            self.mean_params(state),
            {
                "format": "vsml-es-params",
                "version": 1,
                "generation": state.generation,
                **self.run_info(),
            },
        )
        return path


def write_run_config(run_dir: Path, config: Config) -> None:
    """The resolved config, first thing in a run directory: a run killed before its first
    checkpoint (during Ray start-up, say) can then be resumed from generation 0."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    mark_run_dir(run_dir)  # first: a directory is a run only if vsml-es made it
    atomic_write_bytes(Path(run_dir) / "config.yaml", text.encode())


class _ProgressBar:
    """tqdm on a terminal; a plain line every ~5% of the run otherwise (CI logs stay short)."""

    def __init__(self, total: int, initial: int, force: bool | None, enabled: bool):
        self.total = total
        self.tty = sys.stderr.isatty() if force is None else force
        self.enabled = enabled
        self.bar = None
        self.every = max(1, total // 20)
        self.started = time.perf_counter()
        self.initial = initial
        if self.enabled and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="meta-training", unit="gen",
                            dynamic_ncols=True)

    def update(self, row: dict[str, Any], status: dict[str, Any]) -> None:
        if not self.enabled:
            return
        fields = {"fitness": f"{row['fitness_mean']:.4f}", "acc": f"{row['accuracy_mean']:.3f}"}
        fields.update({k: str(v) for k, v in status.items()})
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
            self.bar.update(1)
            return
        done = row["generation"] + 1
        if done % self.every == 0 or done == self.total:
            elapsed = time.perf_counter() - self.started
            rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            print(f"generation {done}/{self.total} {extra} gen/s={rate:.2f}", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
