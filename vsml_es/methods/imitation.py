"""``training.method: imitation``: the learner's online predictions follow a hand-designed
optimizer's on the same streams (paper section 4.1; ``vsml_es.imitation`` has the loss)."""

from __future__ import annotations

from typing import ClassVar

from vsml_es.methods.gradient import GradientMethod


class ImitationMethod(GradientMethod):
    name: ClassVar[str] = "imitation"
