"""``training.method: pes``: Persistent ES (Vicol, Metz, Sohl-Dickstein, ICML 2021). A fresh
direction every window; each window's loss difference is weighted by the sum of the
particle's directions since its stream began, which makes the estimate unbiased for the
whole stream (its variance grows with the windows since the reset)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.methods.online_es import OnlineES
from vsml_es.online import lane_noise


class PersistentES(OnlineES):
    name: ClassVar[str] = "pes"

    def directions(self, generation: int) -> jax.Array:
        o = self.online
        p = np.arange(o.particles)
        n = o.windows_per_stream
        start = o.noise_index(p, o.stream_start(p, generation))  # the stream's first draw
        _, window = o.position(p, generation)
        total = jnp.zeros((o.particles, o.layout.size), jnp.float32)
        for j in range(n):  # same draws, same order of sums, wherever it runs
            z = lane_noise(o.seed, p, start + j, o.layout.size)
            total = total + jnp.where(jnp.asarray(j <= window)[:, None], z, 0.0)
        return total
