"""Named random streams of a run: every draw starts from ``stream_key(seed, TAG)``.

Each stream folds its own tag into the run seed before anything else, so no index inside one
stream (a generation, an episode) can reproduce another stream's key: an untagged
``fold_in(key(seed), generation)`` would equal the ES stream's key at generation == ES tag.
"""

from __future__ import annotations

import jax

ES = 0x0E5  # ES noise: ask/tell keys per generation
INIT = 0x1417  # initial meta-parameters
EPISODES = 0xDA7A  # episode data: datasets, permutations, projections, learner initial states
ONLINE_STREAMS = 0x57EA  # online ES: each particle's streams (examples, initial states)
ONLINE_NOISE = 0x0015E  # online ES: each particle's perturbation directions


def stream_key(seed: int | jax.Array, tag: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), tag)
