"""``compare``: meta-train every meta-learner with the same ES budget, then meta-test them all
beside tuned SGD/Adam on identical streams.

Each learner trains in its own run directory through the ordinary trainer, on the backend the
config asks for (in-process, a private local Ray, or a cluster), with the meta-training task
built once for all of them. A learner whose run directory already holds final parameters from
the same config is reused, so an interrupted comparison picks up where it stopped instead of
retraining what finished, and an interrupted one continues from its newest checkpoint (same
rules as ``vsml-es resume``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vsml_es.backend import Backend, open_backend
from vsml_es.config import Config, config_to_dict
from vsml_es.errors import UserError
from vsml_es.evaluator import make_eval_spec
from vsml_es.experiment import experiment_from_dict, learner_file_config, with_overrides
from vsml_es.learners import build_learner, size_free_names
from vsml_es.metatest import Contender, meta_learned, run_metatest
from vsml_es.multisize import TrainingTask, build_training_task, check_size_free, single_size
from vsml_es.paths import check_new_run_dir, check_output_dir, holds_run
from vsml_es.resources import check_before_work
from vsml_es.resume import plan_resume
from vsml_es.seed_pool import POOLED_FILES, write_pooled
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.storage.params import load_params
from vsml_es.tasks import Data, check_metatest_fits
from vsml_es.trainer import Trainer

TIMING_FILE = "train_seconds.json"
OUTPUT_ENTRIES = ("train_*", "metatest", "timing.json")  # what a comparison writes into --out
# What decides the meta-learned parameters; metatest/compare/logging settings may change freely.
TRAINING_SECTIONS = ("model", "task", "training")


def learner_config(config: Config, learner: str) -> Config:
    """The experiment with ``model.learner`` swapped and the learner's ``compare.es_settings``
    applied; the budget (population, generations, episode length) is never changed."""
    tree = config_to_dict(config)
    tree["model"]["learner"] = learner
    if learner != config.model.learner:  # a warm start file holds model.learner's parameters
        tree["training"]["init_params"] = ""
    tree["training"].update(config.compare.es_settings.get(learner, {}))
    return experiment_from_dict(tree)


def _finished_params(run_dir: Path, config: Config) -> tuple[Any, dict] | None:
    """Final parameters of an earlier, identical run in ``run_dir`` (None if absent/different)."""
    path = run_dir / "params.npz"
    if not path.is_file():
        return None
    params, meta = load_params(path)
    saved, wanted = meta.get("config") or {}, config_to_dict(config)
    if any(saved.get(section) != wanted[section] for section in TRAINING_SECTIONS):
        return None
    if meta.get("generation") != config.training.generations:
        return None
    return params, meta


def train_learner(config: Config, run_dir: Path, task: TrainingTask, data: Data,
                  backend: Backend) -> tuple[Any, float, bool]:
    """(params, seconds, reused): meta-train one learner on ``task`` (resuming an interrupted
    run), or reuse a finished one. ``seconds`` counts the training done by this process."""
    found = _finished_params(run_dir, config)
    if found is not None:
        timing = run_dir / TIMING_FILE
        seconds = json.loads(timing.read_text())["train_seconds"] if timing.is_file() else 0.0
        return found[0], float(seconds), True
    started = time.perf_counter()
    spec = make_eval_spec(config, task)
    with backend.evaluator(spec, data) as evaluator:
        trainer = Trainer(config, run_dir, evaluator=evaluator, spec=spec, data=data)
        state = None
        if holds_run(run_dir):  # an interrupted run: continue from it
            state = trainer.resume_from(plan_resume(run_dir, config))
        state = trainer.run(state)
    seconds = time.perf_counter() - started
    (run_dir / TIMING_FILE).write_text(json.dumps({"train_seconds": seconds}) + "\n")
    return trainer.mean_params(state), seconds, False


def pretrained_path(config: Config, label: str) -> Path:
    return Path(config.compare.pretrained[label].replace("{seed}", str(config.training.seed)))


def pretrained_contenders(config: Config) -> list[Contender]:
    """``compare.pretrained``: each file's learner, built from the config it carries (its own
    model settings) and checked against this comparison's meta-test datasets."""
    contenders = []
    for label in config.compare.pretrained:
        path = pretrained_path(config, label)
        if not path.is_file():
            raise UserError(f"Config key 'compare.pretrained.{label}': no file '{path}'. Give a "
                            ".vsml file or a run's params.npz ('{seed}' becomes training.seed).")
        params, spec = read_learner_file(path)
        own = learner_file_config(path, spec.info)
        check_metatest_fits(config.task, config.metatest, spec.num_inputs,
                            size_free_names(own, (own.model.learner,)))
        contenders.append(Contender(label, build_learner(own.model.learner, own), params))
    return contenders


def run_compare(config: Config, out_dir: Path, log: Any = print) -> tuple[list[dict], dict]:
    """Meta-train ``compare.learners``, meta-test everything; returns (summaries, timing)."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, OUTPUT_ENTRIES, "--out")
    check_size_free(config, tuple(config.compare.learners), "compare.learners")
    for learner in config.compare.learners:  # each learner's config is checked before any work
        learner_config(config, learner)
        run_dir = out_dir / f"train_{learner}"
        if not holds_run(run_dir):  # new, or empty: never a directory of the user's
            check_new_run_dir(run_dir)
    pretrained = pretrained_contenders(config)  # and each given learner file
    check_before_work(config, learners=tuple(config.compare.learners), given_size_free=tuple(
        c.label for c in pretrained if c.learner.size_free))
    out_dir.mkdir(parents=True, exist_ok=True)
    contenders, timing = [], {}
    with open_backend(config.distributed, log) as backend:  # Ray first, then the data
        task, data = build_training_task(config.task)
        for name in config.compare.learners:
            cfg = learner_config(config, name)
            tr = cfg.training
            log(f"meta-training {name} ({tr.generations} generations, population "
                f"{tr.population_size}, {tr.strategy} sigma {tr.sigma:g} lr "
                f"{tr.learning_rate:g}) in {out_dir / ('train_' + name)}")
            params, seconds, reused = train_learner(cfg, out_dir / f"train_{name}", task, data,
                                                    backend)
            log(f"  {name}: {'reused finished run' if reused else f'{seconds / 60:.1f} min'}")
            timing[name] = {"train_seconds": seconds, "reused": reused}
            contenders.append(meta_learned(cfg, params))
    for contender in pretrained:
        where = pretrained_path(config, contender.label)
        log(f"{contender.label}: meta-trained elsewhere, read from {where}")
        contenders.append(contender)
    started = time.perf_counter()
    log("meta-testing " + ", ".join(config.metatest.datasets))
    summaries = run_metatest(contenders, config, out_dir / "metatest",
                             training=(single_size(task), data), num_features=task.num_features)
    timing["metatest_seconds"] = time.perf_counter() - started
    (out_dir / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    return summaries, timing


MAX_SEEDS = 1_000


def seed_configs(config: Config, seeds: int) -> list[Config]:
    """training.seed, +1, ..., one config per meta-training seed, each checked."""
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}.")
    if seeds > MAX_SEEDS:
        raise UserError(f"--seeds {seeds:,} is more than compare runs ({MAX_SEEDS:,} at most: "
                        "each seed meta-trains every learner); lower --seeds.")
    first = config.training.seed
    return [with_overrides(config, [f"training.seed={first + k}"]) for k in range(seeds)]


def run_compare_seeds(config: Config, out_dir: Path, seeds: int,
                      log: Any = print) -> list[dict]:
    """``run_compare`` once per meta-training seed, in ``OUT/seedS``, then the table and the
    curves pooled across the seeds in ``OUT`` (mean and 95 % t-interval across seeds)."""
    out_dir = Path(out_dir)
    configs = seed_configs(config, seeds)
    check_output_dir(out_dir, (*POOLED_FILES, "seed*"), "--out")
    for cfg in configs:  # every seed's learner files exist before the first seed trains
        pretrained_contenders(cfg)
    seed_dirs = []
    for cfg in configs:
        seed_dir = out_dir / f"seed{cfg.training.seed}"
        log(f"== meta-training seed {cfg.training.seed} in {seed_dir}")
        run_compare(cfg, seed_dir, log)
        seed_dirs.append(seed_dir / "metatest")
    return write_pooled(out_dir, seed_dirs, config.metatest.report_steps)
