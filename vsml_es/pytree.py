"""The one name for meta-parameters: a flat dict of named arrays.

All that ES (a pytree), checkpoints and the npz files need; every learner's parameters have it.
"""

from __future__ import annotations

import jax

Params = dict[str, jax.Array]
