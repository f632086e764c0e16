"""A meta-learned learning algorithm as a scikit-learn style online classifier.

``load_learner(path)`` reads a ``.vsml`` file (or a run's ``params.npz``) and returns an
:class:`OnlineClassifier`. It learns by running the network forward on (input, error) pairs:
the only things that change while it learns are the LSTM states (its "weights"); the
meta-parameters stay fixed and there are no gradients and no optimizer.

Inputs go through the same on-device preprocessing as in meta-training
(``vsml_es.preprocess``); when their size differs from the network's input, images are resized
to the training images' size and other data is randomly projected (or zero-padded, on request).
Up to ``n_outputs`` classes can be learned; a learner meta-trained with per-dataset outputs
(``task.per_dataset_outputs``) learning k classes masks the outputs beyond k, as it did in
meta-training, so it learns exactly as a network k wide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from vsml_es import preprocess as pre
from vsml_es.config import PreprocessConfig
from vsml_es.errors import ConfigError, DatasetError, LearnerError
from vsml_es.learners import Learner
from vsml_es.resources import check_learner_fits
from vsml_es.storage.learner_file import LearnerFile, read_learner_file

NORMALIZE = ("dataset", "example", "none")
INPUT_MAPS = ("auto", "exact", "pad", "project", "resize")
CHUNK = 32  # rows per jitted call


def load_learner(
    path: str | Path,
    *,
    normalize: str | None = None,
    input_map: str = "auto",
    random_state: int | jax.Array = 0,
    projection_seed: int = 0,
    mask_outputs: bool | None = None,
) -> OnlineClassifier:
    """An online classifier running the meta-learned learner stored in ``path``.

    normalize: ``'dataset'`` (the meta-training data's mean/std: right for raw data of that
        kind), ``'example'`` (per-example standardization), ``'none'`` (X is already
        standardized, e.g. by sklearn's StandardScaler). Default: as in meta-training.
    input_map: how X's features reach the network's inputs when the counts differ:
        ``'auto'`` (images with the training images' channels are resized to their height and
        width, as ``metatest.preprocess.resize`` does; other data is randomly projected),
        ``'resize'``, ``'project'``, ``'pad'`` (zero-pad fewer features), ``'exact'`` (refuse
        any difference). Projection beats zero-padding on small tabular data: most padded
        inputs would be constant zeros.
    random_state: seed (or JAX key) of the random initial LSTM states (the initial "weights").
    projection_seed: seed of the random projection.
    mask_outputs: learning k classes, mask the outputs beyond k out of the learner's softmax
        and error (a network k wide). Default: as in meta-training (the file's
        ``per_dataset_outputs``). Learners that cannot mask (the meta-learned baselines) never do.
    """
    params, spec = read_learner_file(path)
    return OnlineClassifier(params, spec, normalize=normalize, input_map=input_map,
                            random_state=random_state, projection_seed=projection_seed,
                            mask_outputs=mask_outputs)


# --------------------------------------------------------------------------------------------
# The jitted core (pure functions; the class below only keeps state between calls)


@dataclass(frozen=True)
class _Pipeline:
    """Static description of X row → network input (a jit static argument)."""

    preprocess: PreprocessConfig
    mean: float
    std: float
    pad_to: int | None  # zero-pad the flat features to this size
    project: bool  # multiply by the projection matrix


def _inputs(x: jax.Array, matrix: jax.Array, pipe: _Pipeline) -> jax.Array:
    x = pre.prepare_example(x, pipe.preprocess, pipe.mean, pipe.std)
    if pipe.project:
        return x @ matrix
    if pipe.pad_to is not None:
        return pre.pad_to_shape(x, (pipe.pad_to,))
    return x


class _Sizes(NamedTuple):
    """The network's sizes (what ``Learner.make_for`` reads): conv VSML layers see the flat
    inputs as the learner file's training example shape."""

    num_features: int
    num_outputs: int
    input_shape: tuple[int, ...]


@partial(jax.jit, static_argnames=("learner", "sizes"))
def _init(params: Any, key: jax.Array, learner: Learner, sizes: _Sizes) -> Any:
    init, _ = learner.make_for(params, sizes)  # the initial state is full width, masked or not
    return init(key)


@partial(jax.jit, static_argnames=("learner", "sizes", "pipe"))
def _learn(params, state, xs, ys, mask, matrix, live, learner: Learner, sizes: _Sizes,
           pipe: _Pipeline):
    """Predict-then-learn over the rows in order; padding rows (mask False) are skipped."""
    _, step = learner.make_for(params, sizes, live)

    def body(state, row):
        x, y, keep = row
        return jax.lax.cond(
            keep,
            lambda state: step(state, _inputs(x, matrix, pipe), y),
            lambda state: (state, jnp.zeros((sizes[1],), jnp.float32)),
            state,
        )

    return jax.lax.scan(body, state, (xs, ys, mask))


@partial(jax.jit, static_argnames=("learner", "sizes", "pipe"))
def _predict_logits(params, state, xs, matrix, live, learner: Learner, sizes: _Sizes,
                    pipe: _Pipeline):
    """Logits of each row from the current state; the state is not changed (no learning)."""
    _, step = learner.make_for(params, sizes, live)
    return jax.vmap(lambda x: step(state, _inputs(x, matrix, pipe), jnp.int32(0))[1])(xs)


def _chunks(rows: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Rows in fixed-size chunks (the last one zero-padded) with their real length: one
    compiled shape serves every batch size, from single examples to whole datasets."""
    out = []
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        n = len(chunk)
        out.append((np.concatenate([chunk, np.zeros((CHUNK - n, *chunk.shape[1:]), chunk.dtype)]),
                    n))
    return out


# --------------------------------------------------------------------------------------------
# The classifier


class OnlineClassifier(ClassifierMixin, BaseEstimator):
    """Online classifier following scikit-learn's conventions; learning happens only in the
    LSTM states.

    ``partial_fit`` predicts each example before learning from its label (online, in order),
    exactly as in meta-training. ``predict``/``predict_proba``/``score`` never learn. ``fit``
    starts over, so ``clone``, ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` work as
    with any scikit-learn classifier (the constructor arguments are kept as given).
    """

    def __init__(self, params: dict[str, Any], spec: LearnerFile, *, normalize: str | None = None,
                 input_map: str = "auto", random_state: int | jax.Array = 0,
                 projection_seed: int = 0, mask_outputs: bool | None = None):
        self.params = params
        self.spec = spec
        self.normalize = normalize
        self.input_map = input_map
        self.random_state = random_state
        self.projection_seed = projection_seed
        self.mask_outputs = mask_outputs
        self._setup()

    def set_params(self, **params: Any) -> OnlineClassifier:
        super().set_params(**params)
        self._setup()
        return self

    def _setup(self) -> None:
        """Check the settings and derive what the jitted functions take; forget the task."""
        spec, input_map = self.spec, self.input_map
        normalize = self.normalize or spec.preprocess.normalize
        if self.normalize is None and normalize == "official":
            normalize = "dataset"  # the file's statistics are then the official constants
        if normalize not in NORMALIZE:
            raise LearnerError(f"normalize is '{normalize}'; valid: {', '.join(NORMALIZE)}.")
        if input_map not in INPUT_MAPS:
            raise LearnerError(f"input_map is '{input_map}'; valid: {', '.join(INPUT_MAPS)}.")
        try:  # a file asking for more than this machine has fails here, not inside XLA
            check_learner_fits(spec.learner, spec.num_inputs, spec.num_outputs,
                               "This learner file's network")
        except ConfigError as err:
            raise LearnerError(str(err)) from None
        if normalize == "dataset" and len(spec.stats) != 1:
            raise LearnerError(
                "normalize='dataset' needs the statistics of one meta-training dataset, but this "
                f"file has {len(spec.stats)} ({', '.join(s[0] for s in spec.stats) or 'none'}). "
                "Standardize X yourself and pass normalize='none', or use normalize='example'."
            )
        if self.mask_outputs not in (None, True, False):
            raise LearnerError(f"mask_outputs is {self.mask_outputs!r}; use True, False or None "
                               "(as in meta-training).")
        self._normalize = normalize
        self._params = jax.tree.map(jnp.asarray, self.params)
        self._learner = spec.learner
        mask = spec.per_dataset_outputs if self.mask_outputs is None else self.mask_outputs
        self._masks = bool(mask) and self._learner.masks_outputs
        self._sizes = _Sizes(spec.num_inputs, spec.num_outputs, spec.example_shape or ())
        self.reset()

    # -- sizes and info ------------------------------------------------------------------------

    @property
    def n_inputs(self) -> int:
        return self.spec.num_inputs

    @property
    def n_outputs(self) -> int:
        return self.spec.num_outputs

    @property
    def info(self) -> dict[str, Any]:
        return self.spec.info

    def __repr__(self) -> str:
        training = self.info.get("training", {})
        origin = ""
        if training:
            origin = (f", meta-trained on {'+'.join(training.get('datasets', []))} for "
                      f"{training.get('generation')} generations")
        return (f"OnlineClassifier({self.spec.model.learner}, {self.n_inputs} inputs -> "
                f"{self.n_outputs} outputs{origin})")

    # -- state -----------------------------------------------------------------------------------

    def reset(self, random_state: int | jax.Array | None = None) -> OnlineClassifier:
        """Forget everything learned (fresh random LSTM states), the classes and feature count."""
        if random_state is not None:
            self.random_state = random_state
        self._state = _init(self._params, _key(self.random_state), self._learner, self._sizes)
        self.classes_: np.ndarray | None = None
        self.n_features_in_: int | None = None
        self.n_seen_ = 0
        self._live: jax.Array | None = None  # the class count when masking, once classes are set
        self._example_shape: tuple[int, ...] | None = None
        self._pipe: _Pipeline | None = None
        self._matrix = jnp.zeros((1, 1), jnp.float32)
        return self

    # -- learning --------------------------------------------------------------------------------

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> OnlineClassifier:
        """Learn from (X, y) in order, one example at a time, through the LSTM states only."""
        self.predict_learn(X, y, classes)
        return self

    def predict_learn(self, X: Any, y: Any, classes: Any = None) -> np.ndarray:
        """Like ``partial_fit``, returning the prediction made for each row before its label
        was seen (online "prequential" evaluation, as in meta-training and meta-testing)."""
        before = (self._example_shape, self._pipe, self._matrix, self.n_features_in_,
                  self.classes_, self._live)
        try:
            xs = self._rows(X, learning=True)
            self._set_classes(classes, y)
            ys = self._labels(y, len(xs))
        except LearnerError:  # a rejected first call leaves the learner as it was
            (self._example_shape, self._pipe, self._matrix, self.n_features_in_,
             self.classes_, self._live) = before
            raise
        k = len(self.classes_)
        predictions = []
        for (x_chunk, n), (y_chunk, _) in zip(_chunks(xs), _chunks(ys), strict=True):
            self._state, logits = _learn(self._params, self._state, x_chunk, y_chunk,
                                         np.arange(CHUNK) < n, self._matrix, self._live,
                                         self._learner, self._sizes, self._pipe)
            predictions.append(np.argmax(np.asarray(logits[:n, :k]), axis=1))
            self.n_seen_ += n
        return self.classes_[np.concatenate(predictions)]

    def fit(self, X: Any, y: Any, classes: Any = None) -> OnlineClassifier:
        """``reset()``, then one online pass over (X, y) (classes default to those in y)."""
        self.reset()
        return self.partial_fit(X, y, np.unique(np.asarray(y)) if classes is None else classes)

    # -- prediction (never learns) -------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """[n, n_classes] probabilities from the current state, for each row independently."""
        if self.classes_ is None:
            raise LearnerError(
                "This learner has not learned anything yet: call partial_fit(X, y, classes=...) "
                "first (or fit(X, y))."
            )
        k = len(self.classes_)
        proba = []
        for x_chunk, n in _chunks(self._rows(X, learning=False)):
            logits = _predict_logits(self._params, self._state, x_chunk, self._matrix,
                                     self._live, self._learner, self._sizes, self._pipe)
            proba.append(np.asarray(jax.nn.softmax(logits[:n, :k], axis=-1), dtype=np.float64))
        return np.concatenate(proba)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy of ``predict(X)`` against y (no learning)."""
        y = np.asarray(y)
        predictions = self.predict(X)
        if y.shape != predictions.shape:
            raise LearnerError(f"y has shape {y.shape} but X has {len(predictions)} rows.")
        return float(np.mean(predictions == y))

    # -- input checks ------------------------------------------------------------------------

    def _rows(self, X: Any, learning: bool) -> np.ndarray:
        X = _as_array(X, "X")
        if X.dtype == object or np.issubdtype(X.dtype, np.complexfloating) or not (
                np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise LearnerError(f"X must hold real numbers, got dtype {X.dtype}.")
        if X.ndim < 2:
            raise LearnerError(
                f"X must have shape [n_samples, n_features] (or [n_samples, ...]), got shape "
                f"{X.shape}; for one example use X.reshape(1, -1)."
            )
        if len(X) == 0:
            raise LearnerError("X has no rows.")
        X = X if X.dtype == np.uint8 else X.astype(np.float32)
        if X.dtype != np.uint8 and not np.all(np.isfinite(X)):
            raise LearnerError("X contains NaN or infinity; clean or impute it first.")
        shape = tuple(X.shape[1:])
        if self._example_shape is None:
            if not learning:
                raise LearnerError("Call partial_fit before predicting.")
            self._configure_inputs(shape)
        elif shape != self._example_shape:
            raise LearnerError(
                f"X has examples of shape {shape} ({int(np.prod(shape))} features), but this "
                f"learner has been learning with shape {self._example_shape}; call reset() to "
                "start over with another feature count."
            )
        return X

    def _configure_inputs(self, shape: tuple[int, ...]) -> None:
        """Choose preprocessing and the pad/projection for examples of ``shape`` (once)."""
        cfg = dataclasses.replace(self.spec.preprocess, normalize=self._normalize, shuffle="none",
                                  projection="none", classes=())
        target, n, mode = self.spec.example_shape, self.n_inputs, self.input_map
        resizable = (len(shape) == 3 and target is not None and len(target) == 3
                     and shape[2] == target[2])
        if mode == "resize" and not resizable:
            raise LearnerError(
                f"input_map='resize' needs images [n_samples, height, width, channels] with "
                f"the meta-training images' {target[-1] if target else '?'} channel(s) "
                f"(their shape: {list(target) if target else 'not recorded in this file'}); X "
                f"has examples of shape {shape}."
            )
        try:
            out = pre.output_shape("X", shape, cfg)
        except DatasetError:  # the training resize/pad does not apply to this data: flatten
            cfg = dataclasses.replace(cfg, resize=(), pad_to=())
            out = pre.output_shape("X", shape, cfg)
        if mode == "resize" or (mode == "auto" and resizable and int(np.prod(out)) != n):
            cfg = dataclasses.replace(cfg, resize=tuple(target[:2]), pad_to=())
            out, mode = pre.output_shape("X", shape, cfg), "exact"
        features = int(np.prod(out))
        if mode == "auto":
            mode = "exact" if features == n else "project"
        if mode == "exact" and features != n:
            raise LearnerError(
                f"X has {features} features but the network has {n} inputs and "
                "input_map='exact'; use input_map='auto' (project) or 'pad' instead."
            )
        if mode == "pad" and features > n:
            raise LearnerError(
                f"X has {features} features, more than the network's {n} inputs; zero-padding "
                "cannot drop features: use input_map='project' (or 'auto')."
            )
        _, mean, std = self.spec.stats[0] if self._normalize == "dataset" else ("", 0.0, 1.0)
        self._pipe = _Pipeline(cfg, mean, std, pad_to=n if mode == "pad" else None,
                               project=mode == "project")
        if mode == "project":
            self._matrix = pre.glorot_uniform(jax.random.key(self.projection_seed), features, n)
        self._example_shape = shape
        self.n_features_in_ = int(np.prod(shape))

    def _set_classes(self, classes: Any, y: Any) -> None:
        if classes is None:
            if self.classes_ is None:
                raise LearnerError(
                    "The first partial_fit call needs classes=[...]: every label the stream "
                    "will contain (as in scikit-learn)."
                )
            return
        try:
            classes = np.unique(_as_array(classes, "classes"))
        except TypeError:
            raise LearnerError("classes mixes labels that cannot be ordered (e.g. str and "
                               "int); give labels of one kind.") from None
        if classes.ndim != 1 or classes.dtype == object:
            raise LearnerError(f"classes must be a flat list of labels, got {classes!r}.")
        if self.classes_ is not None:
            if not np.array_equal(classes, self.classes_):
                raise LearnerError(
                    f"classes={classes.tolist()} differs from the classes this learner is "
                    f"learning ({self.classes_.tolist()}); call reset() to start a new task."
                )
            return
        if len(classes) < 2:
            raise LearnerError(f"Need at least 2 classes, got {classes.tolist()}.")
        if len(classes) > self.n_outputs:
            raise LearnerError(
                f"This learner has {self.n_outputs} outputs, so it can learn at most "
                f"{self.n_outputs} classes; got {len(classes)}. Use a learner meta-trained with "
                f"task.num_classes >= {len(classes)}."
            )
        self.classes_ = classes
        if self._masks and len(classes) < self.n_outputs:
            self._live = jnp.asarray(len(classes), jnp.int32)

    def _labels(self, y: Any, n: int) -> np.ndarray:
        y = _as_array(y, "y")
        if y.ndim != 1 or len(y) != n:
            raise LearnerError(f"y must be 1-D with one label per row of X ({n}), got shape "
                               f"{y.shape}.")
        try:
            index = np.searchsorted(self.classes_, y)
            index = np.clip(index, 0, len(self.classes_) - 1)
            unknown = np.asarray(self.classes_[index] != y)
        except TypeError:  # labels of another kind than the classes (str against int)
            raise LearnerError(f"y holds labels of type {y.dtype}, the classes are "
                               f"{self.classes_.dtype}: {self.classes_.tolist()}.") from None
        if unknown.any():
            raise LearnerError(
                f"y contains label(s) {np.unique(y[unknown]).tolist()[:10]} that are not in "
                f"classes {self.classes_.tolist()}."
            )
        return index.astype(np.int32)


def _as_array(value: Any, what: str) -> np.ndarray:
    """``np.asarray`` whose failures (ragged lists, odd objects) say which argument."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise LearnerError(f"{what} cannot be read as an array ({err}); give a rectangular "
                           "array of numbers.") from None


def _key(random_state: int | jax.Array) -> jax.Array:
    if isinstance(random_state, jax.Array) and jnp.issubdtype(random_state.dtype,
                                                               jax.dtypes.prng_key):
        return random_state
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return jax.random.key(int(random_state))
    raise LearnerError(
        f"random_state must be an int seed or a JAX key (jax.random.key), got "
        f"{type(random_state).__name__}."
    )
