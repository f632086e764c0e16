"""``training.method: backprop``: gradient descent on the learner's own online loss through
the unrolled episode (the official code's backprop meta-optimization): the ES objective,
differentiated instead of estimated."""

from __future__ import annotations

from typing import ClassVar

from vsml_es.methods.gradient import GradientMethod


class BackpropMethod(GradientMethod):
    name: ClassVar[str] = "backprop"
