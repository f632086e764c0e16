"""The one learner interface: a learning algorithm as pure functions over pytrees.

A learner, given its parameters and the task's input/output sizes, makes two functions:
``init(key) -> state`` and ``step(state, x, y) -> (state, logits)``, where ``logits`` is the
prediction made *before* ``y`` was revealed and everything learned lives in ``state``. VSML,
the other meta-learners and the hand-designed optimizers (SGD/Adam) all implement it, so the ES
evaluator, meta-testing, ``compare`` and the exported classifier run every one of them through
the same code on the same streams.

A meta-learned learner's parameters are found by ES; a tuned learner's "parameters" are its
hyperparameters (a learning rate), chosen from a grid on meta-training streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import jax

from vsml_es.pytree import Params

InitFn = Callable[[jax.Array], Any]
StepFn = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array]]


class Learner:
    """Base of every learner. Subclasses are frozen dataclasses holding only static settings
    (sizes of hidden layers, the VSML model config): hashable, so a learner is a static argument
    of the jitted episode functions, and small, so it travels to Ray workers inside the spec."""

    label: ClassVar[str] = "learner"  # shown in tables and plots
    # True when the parameters do not depend on the input size, so the same learner runs on
    # inputs of any size (VSML's shared LSTM; an optimizer's learning rate).
    size_free: ClassVar[bool] = False
    # True when ``make`` takes ``live=`` (a traced count: only the first ``live`` outputs are
    # the episode dataset's classes) and masks the others out of its own error or loss, so it
    # learns as a network ``live`` wide would (task.per_dataset_outputs).
    masks_outputs: ClassVar[bool] = False

    def init_params(self, key: jax.Array, num_features: int, num_outputs: int) -> Params:
        """Initial parameters for a task with these sizes (ES starts its search here)."""
        raise NotImplementedError

    def warm_start(self, params: Params, template: Params) -> Params:
        """Stored parameters completed to this config's ``template`` (``init_params``): a
        learner adds here the parameters of options that start as a no-op, so a learner
        meta-trained without such an option can continue with it. Default: as stored."""
        del template
        return params

    def make(self, params: Params, num_features: int, num_outputs: int) -> tuple[InitFn, StepFn]:
        """The online learner that ``params`` define, for a task with these sizes."""
        raise NotImplementedError

    @property
    def takes_input_shape(self) -> bool:
        """True when ``make`` needs ``input_shape=`` (one example's unflattened shape), e.g.
        VSML with conv layers; the others see flat features only."""
        return False

    def make_for(self, params: Params, task: Any,
                 live: jax.Array | None = None) -> tuple[InitFn, StepFn]:
        """``make`` for a task (anything with num_features, num_outputs, input_shape): passes
        ``live`` (when given) and the input shape to learners that take them."""
        kwargs: dict[str, Any] = {} if live is None else {"live": live}
        if self.takes_input_shape:
            kwargs["input_shape"] = tuple(task.input_shape)
        return self.make(params, task.num_features, task.num_outputs, **kwargs)

    def describe(self, params: Params) -> str:
        """The name of this learner with these parameters in tables (e.g. its learning rate)."""
        del params
        return self.label
