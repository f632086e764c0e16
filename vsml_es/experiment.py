"""User input to a validated experiment config: the one place where every check runs.

``vsml_es.config`` parses (types, keys, plain ranges); each domain checks its own options
(``preprocess`` the data pipeline, ``learners`` the learner names, ``es`` the strategy). This
module calls all of them, so a config that leaves here is safe to start work with, and a
mistake anywhere in it fails before any work with a :class:`~vsml_es.errors.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from vsml_es import fused
from vsml_es.config import (
    ES_SETTING_KEYS,
    Config,
    TrainingConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_section,
    positive,
    replace,
)
from vsml_es.errors import ConfigError, UserError, did_you_mean
from vsml_es.es import validate_strategy
from vsml_es.learners import build_learner, validate_learner_names
from vsml_es.methods import METHODS
from vsml_es.multisize import check_size_free
from vsml_es.preprocess import validate_task_config
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.tasks import check_conv_inputs, check_dataset_refs, check_image_inputs
from vsml_es.tracking import validate_tracking


def validate(config: Config, *, check_warm_start: bool = True) -> Config:
    """Every domain's checks on a parsed config; returns it unchanged.

    ``check_warm_start=False`` for stored configs: their ``training.init_params`` is history
    (generation 0 of a run that exists), so a learner file or a checkpoint stays usable after
    the file it started from is gone."""
    validate_task_config(config.task, config.metatest)
    check_dataset_refs(config.task, config.metatest)
    check_conv_inputs(config.model, config.task, config.metatest)
    fused.check_config(config)
    validate_learner_names(config)
    _check_conv_baselines(config)
    check_size_free(config, (config.model.learner,), "model.learner")
    validate_strategy(config.training)
    validate_tracking(config.logging)
    _validate_es_settings(config)
    _validate_pretrained(config)
    _validate_method(config, check_warm_start)
    return config


def _check_conv_baselines(config: Config) -> None:
    """Baselines that convolve (adam_conv, sgd_conv) need image-shaped meta-test data and
    meta-training streams (their learning rate is tuned on those)."""
    convolving = [name for name in config.metatest.baselines
                  if build_learner(name, config).takes_input_shape]
    if convolving:
        check_image_inputs(config.task, config.metatest,
                           f"metatest.baselines ({', '.join(convolving)})")


def _validate_pretrained(config: Config) -> None:
    """Labels of ``compare.pretrained`` name rows of their own; the files are read (and
    checked) by ``compare`` before any work, not here: stored configs outlive the files."""
    compare = config.compare
    for label, path in compare.pretrained.items():
        if label in compare.learners:
            raise ConfigError(
                f"Config key 'compare.pretrained.{label}' has the name of a learner that "
                f"compare trains (compare.learners: {', '.join(compare.learners)}); give the "
                "file a label of its own, e.g. vsml_imitation."
            )
        if not path.strip():
            raise ConfigError(f"Config key 'compare.pretrained.{label}' is empty; give a .vsml "
                              "file or a run's params.npz.")


def learner_file_config(path: Path, info: dict[str, Any]) -> Config:
    """The run config a learner file carries (its ``info``), checked by this vsml-es."""
    if "config" not in info:
        raise UserError(f"'{path}' holds no run config; was it written by vsml-es?")
    try:
        return experiment_from_dict(info["config"])
    except UserError as err:
        raise UserError(f"'{path}' holds a run config this vsml-es cannot use: {err}") from None


def _validate_method(config: Config, check_warm_start: bool) -> None:
    """``training.method`` names a method, which checks its own keys; a warm start file fits
    the learner it starts."""
    tr = config.training
    if tr.method not in METHODS:
        raise ConfigError(f"Config key 'training.method' is '{tr.method}'; valid values: "
                          f"{', '.join(METHODS)}.{did_you_mean(tr.method, METHODS)}")
    METHODS[tr.method].validate(config)
    if tr.init_params and check_warm_start:
        check_init_params(config)


def check_init_params(config: Config) -> None:
    """``training.init_params`` is a readable learner file whose parameters have exactly the
    shapes this config's learner starts from (and so would not fail generations later)."""
    path = Path(config.training.init_params_path())
    if not path.is_file():
        raise ConfigError(f"Config key 'training.init_params': no file '{path}'. Give a .vsml "
                          "file or a run's params.npz, or '' to start from random parameters.")
    params, _ = read_learner_file(path)
    learner = build_learner(config.model.learner, config)
    want = jax.eval_shape(lambda: learner.init_params(jax.random.key(0), 8, 2))
    params = learner.warm_start(params, want)
    have = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    shapes = jax.tree.map(lambda s: s.shape, want), jax.tree.map(lambda s: s.shape, have)
    if jax.tree.structure(want) != jax.tree.structure(have) or shapes[0] != shapes[1]:
        raise ConfigError(
            f"Config key 'training.init_params': '{path}' holds parameters of another shape "
            f"than model.learner '{config.model.learner}' with this model config uses; start "
            "from a learner with the same model settings (state_size, message_size, ...)."
        )


def load_experiment(path: str | Path | None = None,
                    overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- experiment file <- ``--set`` overrides, validated."""
    return validate(load_config(path, overrides))


def experiment_from_dict(data: dict[str, Any]) -> Config:
    """A stored config (run directory, checkpoint), validated like a new one."""
    return validate(config_from_dict(data), check_warm_start=False)


def with_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    new = replace(config, overrides)
    return validate(new, check_warm_start=new.training.init_params != config.training.init_params)


def _validate_es_settings(config: Config) -> None:
    """Each learner's training settings are checked like ``training`` itself, up front: a bad
    one would otherwise surface only when that learner's turn comes, after the others trained."""
    compare = config.compare
    for learner, settings in compare.es_settings.items():
        path = f"compare.es_settings.{learner}"
        if learner not in compare.learners:
            raise ConfigError(
                f"Config key '{path}' names a learner that is not in compare.learners "
                f"({', '.join(compare.learners)}); add it there or remove its settings."
            )
        if not isinstance(settings, dict):
            raise ConfigError(
                f"Config key '{path}' must be a mapping of training settings, e.g. "
                f"{{sigma: 0.02, learning_rate: 0.01}}; got {settings!r}."
            )
        for key in settings:
            if key not in ES_SETTING_KEYS:
                why = (" would change the meta-training budget, which every learner shares"
                       if key in ("population_size", "generations") else " is not an ES setting")
                raise ConfigError(
                    f"Config key '{path}.{key}'{why}. Settable per learner: "
                    f"{', '.join(ES_SETTING_KEYS)}."
                )
        merged: TrainingConfig = parse_section(
            TrainingConfig, {**config_to_dict(config.training), **settings}, f"{path}.")
        positive(f"{path}.sigma", merged.sigma)
        positive(f"{path}.learning_rate", merged.learning_rate)
        try:
            validate_strategy(merged)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
