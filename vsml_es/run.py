"""The library API: what each command does, callable from Python (and from a notebook).

Every function here builds its objects once, at the top, and passes them down: the backend
(in-process or Ray, opened before any data is loaded), the meta-training task, the evaluator.
The commands in ``vsml_es.commands`` only parse arguments and print what these return.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from vsml_es.backend import open_backend
from vsml_es.compare import run_compare, run_compare_seeds
from vsml_es.config import Config
from vsml_es.errors import Report, UserError
from vsml_es.evaluator import make_eval_spec
from vsml_es.experiment import learner_file_config, with_overrides
from vsml_es.export import export_run
from vsml_es.introspect import introspect_learner
from vsml_es.introspect_report import OUTPUT_FILES as INTROSPECT_FILES
from vsml_es.learners import Params, size_free_names
from vsml_es.metatest import meta_learned, run_metatest
from vsml_es.methods import build_method
from vsml_es.multisize import build_training_task, single_size
from vsml_es.paths import check_new_run_dir, check_output_dir
from vsml_es.reporting import OUTPUT_FILES
from vsml_es.resources import check_before_work, check_evaluate
from vsml_es.resume import ResumePlan, plan_resume
from vsml_es.runs import plot_runs
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.tasks import check_datasets_ready, check_metatest_fits
from vsml_es.tracking import open_trackers
from vsml_es.trainer import Trainer, write_run_config

__all__ = ["TrainResult", "compare", "compare_seeds", "default_run_dir", "evaluate_file",
           "export_run", "introspect_file", "resume_training", "start_training", "train"]


@dataclass
class TrainResult:
    run_dir: Path
    generation: int  # generations completed
    minutes: float  # meta-training wall time of this call
    final_fitness: float  # mean population fitness of the last generation
    params: Params  # the ES mean: the meta-learned parameters
    summaries: list[dict] | None  # meta-test rows (None when skipped)


def default_run_dir(config: Config) -> Path:
    return Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config: Config, run_dir: Path, *, resume: ResumePlan | None = None,
          metatest: bool = True, log: Report = print) -> TrainResult:
    """Meta-train (from scratch, or from a resume plan), then meta-test the mean parameters.

    A stop by SIGTERM/SIGINT raises :class:`~vsml_es.signals.TrainingInterrupted` after the
    checkpoint is written.
    """
    run_dir = Path(run_dir)
    check_before_work(config, metatest)
    write_run_config(run_dir, config)  # resumable from here on, even before a checkpoint
    with open_backend(config.distributed, log) as backend:  # Ray first, then the data
        task, data = build_training_task(config.task)
        spec = make_eval_spec(config, task)
        method = build_method(config, spec)  # once: the trainer only calls its interface
        with backend.evaluator(spec, data) as evaluator:
            trainer = Trainer(config, run_dir, evaluator=evaluator, spec=spec, data=data,
                              method=method)
            state = trainer.resume_from(resume, log) if resume is not None else None
            started = time.perf_counter()
            state = trainer.run(state)
    minutes = (time.perf_counter() - started) / 60
    params = trainer.mean_params(state)
    plot_runs([run_dir], run_dir / "plots" / "meta_training.png")
    summaries = None
    if metatest:
        summaries = run_metatest([meta_learned(config, params)], config, run_dir / "metatest",
                                 training=(single_size(task), data),
                                 num_features=task.num_features)
        trackers = open_trackers(config.logging, run_dir, state.generation, append=True)
        trackers.log_metatest(summaries)
        trackers.close()
    saved = resume.checkpoint.meta.get("fitness") if resume and resume.checkpoint else None
    last = trainer.last_row.get("fitness_mean", saved)  # no generation left: the checkpoint's
    return TrainResult(run_dir, state.generation, minutes,
                       float(last) if isinstance(last, int | float) else float("nan"), params,
                       summaries)


def start_training(config: Config, run_dir: Path | None = None, *, metatest: bool = True,
                   log: Report = print) -> TrainResult:
    """A new run in ``run_dir`` (default ``runs/NAME-TIMESTAMP``), never over another run."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    check_new_run_dir(run_dir)
    log(f"run directory: {run_dir}")
    return train(config, run_dir, metatest=metatest, log=log)


def resume_training(run_dir: Path, requested: Config | None = None,
                    overrides: list[str] | tuple[str, ...] = (), *, metatest: bool = True,
                    restart: bool = False, log: Report = print) -> TrainResult:
    """Continue ``run_dir`` from its newest valid checkpoint, with ``requested`` (a config from
    an experiment file, which must match the run's up to safe keys) or the run's own config
    with ``overrides``. ``restart`` allows starting over when every checkpoint is unusable."""
    plan = plan_resume(run_dir, requested, overrides if requested is None else (),
                       restart=restart)
    return train(plan.config, Path(run_dir), resume=plan, metatest=metatest, log=log)


def evaluate_file(path: Path, datasets: tuple[str, ...] | None = None, steps: int | None = None,
                  episodes: int | None = None, overrides: list[str] | tuple[str, ...] = (),
                  out: Path | None = None) -> tuple[list[dict], Path]:
    """Meta-test the learner in a ``.vsml`` file or a run's ``params.npz``; (rows, out dir)."""
    params, spec = read_learner_file(path)  # either format, checked
    for name, value in (("--steps", steps), ("--episodes", episodes)):
        if value is not None and value <= 0:
            raise UserError(f"{name} must be positive, got {value}.")
    config = learner_file_config(path, spec.info)
    # The flags become config keys, so they are checked like the config's own values.
    if datasets:
        overrides = [*overrides, f"metatest.datasets={json.dumps(list(datasets))}"]
    overrides = [*overrides, *(f"metatest.{key}={value}" for key, value in
                               (("steps", steps), ("episodes", episodes)) if value is not None)]
    if overrides:
        config = with_overrides(config, overrides)
    out = Path(out) if out is not None else Path(path).parent / "evaluate"
    check_output_dir(out, OUTPUT_FILES, "--out")
    # Tuning the baselines reads the meta-training data; the meta-test reads its own.
    check_datasets_ready(config.task, config.metatest, training=bool(config.metatest.baselines))
    check_metatest_fits(config.task, config.metatest, spec.num_inputs,
                        size_free_names(config, (config.model.learner,)))
    check_evaluate(config, spec.num_inputs, (config.model.learner,), steps, episodes)
    summaries = run_metatest([meta_learned(config, params)], config, out, steps=steps,
                             episodes=episodes, num_features=spec.num_inputs)
    return summaries, out


def learner_source(path: Path) -> Path:
    """A learner file, or a run directory's final ``params.npz``."""
    path = Path(path)
    if path.is_dir():
        if not (path / "params.npz").is_file():
            raise UserError(f"Run directory '{path}' has no params.npz (training has not "
                            "finished); give a .vsml file, or export one with 'vsml-es export "
                            f"{path} -o NAME.vsml'.")
        return path / "params.npz"
    return path


def introspect_file(path: Path, dataset: str, steps: int | None = None,
                    episodes: int | None = None, seed: int | None = None,
                    overrides: list[str] | tuple[str, ...] = (), out: Path | None = None,
                    log: Report = print) -> tuple[dict, Path]:
    """Trace a VSML learner (``.vsml`` file, ``params.npz`` or run directory) over episodes of
    ``dataset`` beside tuned SGD: (accuracy by occurrence per learner, out dir)."""
    source = learner_source(path)
    params, spec = read_learner_file(source)
    if spec.model.learner != "vsml":
        raise UserError(f"'{path}' holds a '{spec.model.learner}' learner; introspect reads "
                        "the states of VSML's output units, so it needs a VSML learner.")
    config = learner_file_config(path, spec.info)
    # The flags become config keys, so they are checked like the config's own values.
    overrides = [*overrides, f"metatest.datasets={json.dumps([dataset])}",
                 'metatest.baselines=["sgd"]',
                 *(f"metatest.{key}={value}" for key, value in
                   (("steps", steps), ("episodes", episodes), ("seed", seed))
                   if value is not None)]
    config = with_overrides(config, overrides)
    out = Path(out) if out is not None else source.parent / "introspect"
    check_output_dir(out, INTROSPECT_FILES, "--out")
    check_datasets_ready(config.task, config.metatest, training=True)
    check_metatest_fits(config.task, config.metatest, spec.num_inputs,
                        size_free_names(config, (config.model.learner,)))
    check_evaluate(config, spec.num_inputs, (config.model.learner,), command="Introspection")
    return introspect_learner(config, params, spec.num_inputs, out, log), out


def compare(config: Config, out: Path, log: Report = print) -> tuple[list[dict], dict]:
    """Meta-train every ``compare.learners`` entry, meta-test all beside the tuned baselines."""
    return run_compare(config, out, log)


def compare_seeds(config: Config, out: Path, seeds: int, log: Report = print) -> list[dict]:
    """``compare`` for ``seeds`` meta-training seeds, pooled: rows with intervals across seeds."""
    return run_compare_seeds(config, out, seeds, log)
