"""``training.method: nres``: Noise-Reuse ES (Li, Harrison, Sohl-Dickstein, Smith, Metz,
NeurIPS 2023). A particle keeps one direction z for its whole stream, so each window's loss
difference is an unbiased estimate along that direction of the whole stream's gradient
share, with the lowest variance of the online estimators in its class."""

from __future__ import annotations

from typing import ClassVar

import jax
import numpy as np

from vsml_es.methods.online_es import OnlineES
from vsml_es.online import lane_noise


class NoiseReuseES(OnlineES):
    name: ClassVar[str] = "nres"

    def directions(self, generation: int) -> jax.Array:
        o = self.online
        p = np.arange(o.particles)
        return lane_noise(o.seed, p, o.noise_index(p, generation), o.layout.size)
