"""The ``.vsml`` learner file: a meta-learned learning algorithm that anyone can load.

One npz file (read with ``allow_pickle=False``): the mean meta-parameters as named arrays plus
one JSON metadata record (model config, input/output sizes, input preprocessing, training
provenance, meta-test scores, versions). The format is documented in docs/vsml-file-format.md;
``FORMAT_VERSION`` changes whenever a reader would have to behave differently. A run's
``params.npz`` is read the same way.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vsml_es.config import Config, ModelConfig, PreprocessConfig, config_from_dict
from vsml_es.errors import LearnerError, UserError
from vsml_es.learners import Learner, build_learner
from vsml_es.storage.checkpoint import versions
from vsml_es.storage.params import load_params

FORMAT = "vsml-learner"
FORMAT_VERSION = 1
SUFFIX = ".vsml"
PARAMS_FORMAT = "vsml-es-params"  # a run's params.npz, also loadable as a learner


def params_sha256(params: dict[str, Any]) -> str:
    """Identity of a parameter set: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(params):
        value = np.ascontiguousarray(params[name])
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def learner_file_meta(info: dict[str, Any], params: dict[str, Any], generation: int, source: str,
                      scores: list[dict[str, Any]], note: str) -> dict[str, Any]:
    """The metadata record of a ``.vsml`` file, from a run's parameter or checkpoint info."""
    config = info["config"]
    task, training, model = config["task"], config["training"], config["model"]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "learner": model.get("learner", "vsml"),
        "model": model,
        "num_inputs": int(info["num_features"]),
        "num_outputs": int(info["num_outputs"]),
        # task.per_dataset_outputs: meta-trained with each episode's outputs limited to its
        # dataset's classes, so a learner of k classes masks the outputs beyond k.
        "per_dataset_outputs": bool(task.get("per_dataset_outputs", False)),
        "input": {
            "preprocess": task.get("preprocess", {}),
            "stats": info.get("input_stats", []),
            "example_shape": info.get("example_shape"),
        },
        "training": {
            "run_name": config.get("name"),
            "datasets": list(task.get("mixture") or [task["dataset"]]),
            "split": task.get("split"),
            "episode_length": task.get("episode_length"),
            "permute_labels": task.get("permute_labels"),
            "fitness": task.get("fitness"),
            "strategy": training.get("strategy"),
            "population_size": training.get("population_size"),
            "seed": training.get("seed"),
            "generation": generation,
            "source": source,
        },
        "metatest": {"note": note, "summary": scores},
        "params_sha256": params_sha256(params),
        "versions": versions(),
        "config": config,
    }
    meta["metadata_sha256"] = metadata_sha256(meta)
    return meta


@dataclass(frozen=True)
class LearnerFile:
    """What a learner file says about how to run its parameters."""

    model: ModelConfig
    num_inputs: int
    num_outputs: int
    preprocess: PreprocessConfig  # the meta-training input preprocessing
    stats: tuple[tuple[str, float, float], ...]  # (dataset, mean, std) behind 'dataset' normalize
    info: dict[str, Any]  # the file's whole metadata
    example_shape: tuple[int, ...] | None = None  # a preprocessed training example, unflattened
    # Meta-trained with per-dataset outputs (task.per_dataset_outputs): learning k classes, the
    # outputs beyond k are masked out of the learner's softmax and error, as in meta-training.
    per_dataset_outputs: bool = False

    @property
    def learner(self) -> Learner:
        """The learner that runs these parameters (``model.learner`` with the file's model)."""
        return build_learner(self.model.learner, Config(model=self.model))


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{what} is {type(value).__name__}, not a mapping")
    return value


def read_learner_file(path: str | Path) -> tuple[dict[str, np.ndarray], LearnerFile]:
    """Parameters and spec of a ``.vsml`` file or a run's ``params.npz``, checked; any
    malformed part is a :class:`LearnerError` that names it."""
    params, meta = load_params(Path(path))
    kind = meta.get("format")
    if kind == FORMAT:
        version = meta.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise LearnerError(f"'{path}' has an invalid .vsml format version {version!r}; the "
                               "file is corrupt or was edited.")
        if version > FORMAT_VERSION:
            raise LearnerError(
                f"'{path}' has .vsml format version {version}; this vsml-es reads versions up "
                f"to {FORMAT_VERSION}. Upgrade vsml-es (pip install -U vsml-es)."
            )
        if meta.get("params_sha256") != params_sha256(params):
            raise LearnerError(f"'{path}' is corrupt: its parameters do not match their SHA-256.")
    elif kind != PARAMS_FORMAT:
        raise LearnerError(
            f"'{path}' is not a vsml-es learner file (format {kind!r}); export one with "
            "'vsml-es export RUN_DIR -o NAME.vsml'."
        )
    try:
        if kind == FORMAT:
            given = _mapping(meta.get("input"), "input")
            tree = {"model": _mapping(meta.get("model"), "model"),
                    "task": {"preprocess": _mapping(given.get("preprocess"), "input.preprocess")}}
            stats, example_shape = given.get("stats") or [], given.get("example_shape")
        else:
            tree = _mapping(meta.get("config"), "config")
            stats, example_shape = meta.get("input_stats") or [], meta.get("example_shape")
        config = config_from_dict(tree)
        build_learner(config.model.learner, config)  # a learner this installation knows
        if kind == FORMAT:  # files exported before the key existed: the run's config says
            run_task = _mapping(_mapping(meta.get("config"), "config").get("task"), "config.task")
            per_dataset = meta.get("per_dataset_outputs",
                                   run_task.get("per_dataset_outputs", False))
        else:
            per_dataset = config.task.per_dataset_outputs
        if not isinstance(per_dataset, bool):
            raise ValueError(f"per_dataset_outputs is {per_dataset!r}, not true or false")
        sizes = meta.get("num_inputs", meta.get("num_features")), meta.get("num_outputs")
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 2**24
                   for n in sizes):
            raise ValueError(f"input/output sizes {sizes} are not positive integers")
        if not isinstance(stats, list) or len(stats) > MAX_STATS:
            raise ValueError(f"input.stats is not a list of at most {MAX_STATS} entries")
        spec = LearnerFile(
            model=config.model,
            num_inputs=sizes[0],
            num_outputs=sizes[1],
            preprocess=config.task.preprocess,
            stats=tuple(_stat(s) for s in stats),
            info=meta,
            example_shape=_shape(example_shape, sizes[0]),
            per_dataset_outputs=per_dataset,
        )
        _check_one_reading(meta, kind, spec)
    except (UserError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise LearnerError(
            f"'{path}' has metadata this vsml-es cannot use (written by another version, or "
            f"edited?): {err}"
        ) from None
    _check_shapes(path, params, spec)
    return params, spec


MAX_STATS = 1024  # one entry per meta-training dataset
MAX_SHAPE_DIMS = 4  # (H, W, C) images, (L,) signals, (n,) features: never more


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a statistic is {value!r}, not a number")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"a statistic is {number}")
    return number


def _stat(entry: Any) -> tuple[str, float, float]:
    """(dataset, mean, std) of one input.stats entry: std finite and positive, or
    normalizing would divide by zero and every prediction would be the same."""
    entry = _mapping(entry, "an input.stats entry")
    name, mean, std = entry.get("dataset", "?"), _finite(entry["mean"]), _finite(entry["std"])
    if not isinstance(name, str) or len(name) > 200:
        raise ValueError(f"an input.stats entry names dataset {name!r}, not a dataset name")
    if not std > 0:
        raise ValueError(f"input.stats of '{name}' has std {std}; a standard deviation used "
                         "to normalize must be positive")
    return name, mean, std


def _shape(value: Any, num_inputs: int) -> tuple[int, ...] | None:
    """The training example shape: positive integers whose product is the input size."""
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SHAPE_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**24 for d in value):
        raise ValueError(f"example_shape {value!r} is not a list of 1-{MAX_SHAPE_DIMS} "
                         "positive integers")
    if int(np.prod(value, dtype=np.int64)) != num_inputs:
        raise ValueError(f"example_shape {value} does not have the file's {num_inputs} inputs")
    return tuple(value)


def _check_one_reading(meta: dict[str, Any], kind: str, spec: LearnerFile) -> None:
    """The fields a reader uses agree with the run config the file carries, which ``evaluate``
    and ``compare`` build the learner from: one file, one learner, whoever reads it. A file
    written now also carries ``metadata_sha256``, so an edit of these fields is caught as such."""
    run = config_from_dict(_mapping(meta.get("config"), "config"))
    disagree = []
    if run.model != spec.model:
        disagree.append("model")
    if run.task.preprocess != spec.preprocess:
        disagree.append("input.preprocess")
    if run.task.per_dataset_outputs != spec.per_dataset_outputs:
        disagree.append("per_dataset_outputs")
    if spec.num_outputs != run.task.num_classes:
        disagree.append(f"num_outputs ({spec.num_outputs}; the run's task.num_classes is "
                        f"{run.task.num_classes})")
    if disagree:
        raise ValueError(f"{', '.join(disagree)} disagree(s) with the run config the file "
                         "carries")
    if kind == FORMAT and "metadata_sha256" in meta:
        if meta["metadata_sha256"] != metadata_sha256(meta):
            raise ValueError("its metadata does not match metadata_sha256 (edited?)")


SIGNED_FIELDS = ("learner", "model", "num_inputs", "num_outputs", "per_dataset_outputs",
                 "input", "config")


def metadata_sha256(meta: dict[str, Any]) -> str:
    """Identity of the metadata fields that decide how the parameters run."""
    import json

    signed = {key: meta.get(key) for key in SIGNED_FIELDS}
    return hashlib.sha256(json.dumps(signed, sort_keys=True, allow_nan=False).encode()
                          ).hexdigest()


def _check_shapes(path: str | Path, params: dict[str, np.ndarray], spec: LearnerFile) -> None:
    expected = jax.eval_shape(
        lambda: spec.learner.init_params(jax.random.key(0), spec.num_inputs, spec.num_outputs))
    got = {k: tuple(v.shape) for k, v in params.items()}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    if got != want:
        raise LearnerError(
            f"'{path}' holds parameters {got} but its model config needs {want}; the file is "
            "corrupt or was edited."
        )


