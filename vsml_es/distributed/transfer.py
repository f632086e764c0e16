"""How a generation's members reach the workers: the members themselves, or the recipe they
were drawn with (ES state + the generation's ask key), from which each worker redraws them.

Shipping members costs O(population x parameters) bytes per generation; shipping the recipe
costs O(parameters) per worker whatever the population (OpenAI's ES did the same with its
shared noise table). The recipe is used only where it is both correct and cheaper: the
strategy's ask must redraw the driver's members bit for bit (checked once on the driver, and
on every worker's first redraw), and its state must be smaller than a shard of members
(population-based strategies keep the whole population in their state, CMA-ES a D x D
covariance: they keep the members path). The choice is made once per run and logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from vsml_es.evaluator import AskRecipe

MODES = ("auto", "recipe", "members")


def nbytes(tree: Any) -> int:
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree)))


# What travels per generation: the ask key's raw data and implementation name, and the
# leaves of the ES state and params that ask reads. Plain numpy and str only, so unpacking it
# on a worker imports nothing (the scale benchmark's light actors never import JAX).
Wire = tuple[np.ndarray, str, list[np.ndarray], list[np.ndarray]]


def wire_nbytes(wire: Wire) -> int:
    return wire[0].nbytes + nbytes(wire[2]) + nbytes(wire[3])


@dataclass(frozen=True)
class Drawer:
    """The strategy, and which leaves of its state and params its ask reads (the others, e.g.
    Adam's moments or the best solution so far, never travel): sent to each worker once."""

    algorithm: Any
    state_def: Any
    params_def: Any
    used: tuple[bool, ...]  # per leaf of (state, params): read by ask's members
    skipped: tuple[tuple[tuple[int, ...], str], ...]  # shape and dtype of each unread leaf

    @classmethod
    def of(cls, ask: AskRecipe) -> Drawer:
        """Found by dead-code elimination of ask's jaxpr, members as the only output."""
        from jax.interpreters import partial_eval

        closed = jax.make_jaxpr(lambda k, s, p: ask.algorithm.ask(k, s, p)[0])(
            ask.key, ask.state, ask.params)
        _, inputs = partial_eval.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
        leaves = [*jax.tree.leaves(ask.state), *jax.tree.leaves(ask.params)]
        used = tuple(bool(u) for u in inputs[1:])  # input 0 is the key
        skipped = tuple((np.shape(x), str(np.asarray(x).dtype))
                        for x, u in zip(leaves, used, strict=True) if not u)
        return cls(ask.algorithm, jax.tree.structure(ask.state),
                   jax.tree.structure(ask.params), used, skipped)

    def wire(self, ask: AskRecipe) -> Wire:
        """This generation's recipe: the key and the leaves that ask reads."""
        n = self.state_def.num_leaves
        leaves = [*jax.tree.leaves(ask.state), *jax.tree.leaves(ask.params)]
        sent = [np.asarray(x) if u else None for x, u in zip(leaves, self.used, strict=True)]
        return (np.asarray(jax.random.key_data(ask.key)), str(jax.random.key_impl(ask.key)),
                [x for x in sent[:n] if x is not None], [x for x in sent[n:] if x is not None])

    def draw(self, wire: Wire) -> Any:
        """The population the driver drew: the strategy's own ask, on the same inputs (zeros
        in the leaves it does not read)."""
        key_data, impl, state, params = wire
        given, zeros = iter([*state, *params]), iter(self.skipped)
        leaves = []
        for u in self.used:
            shape, dtype = (None, None) if u else next(zeros)
            leaves.append(next(given) if u else np.zeros(shape, dtype))
        n = self.state_def.num_leaves
        key = jax.random.wrap_key_data(key_data, impl=impl)
        population, _ = self.algorithm.ask(key, jax.tree.unflatten(self.state_def, leaves[:n]),
                                           jax.tree.unflatten(self.params_def, leaves[n:]))
        return population


def digest(members: Any) -> str:
    """Fingerprint of members' exact bits (the driver's and a worker's must agree)."""
    h = hashlib.blake2b(digest_size=16)
    for leaf in jax.tree.leaves(members):
        leaf = np.ascontiguousarray(leaf)
        h.update(str((leaf.shape, leaf.dtype)).encode())
        h.update(leaf.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Choice:
    mode: str  # recipe | members
    reason: str


def _holds_keys(tree: Any) -> bool:
    return any(jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)
               for x in jax.tree.leaves(tree))


def choose(requested: str, ask: AskRecipe, population: Any,
           shards: int) -> tuple[Choice, Drawer | None]:
    """recipe or members for this run (``requested``: auto | recipe | members), and the
    drawer the workers need for the recipe."""
    if requested == "members":
        return Choice("members", "distributed.transfer is 'members'"), None
    if _holds_keys((ask.state, ask.params)):
        return Choice("members", "the ES state holds PRNG keys"), None
    drawer = Drawer.of(ask)
    wire = drawer.wire(ask)
    size, per_shard = wire_nbytes(wire), nbytes(population) / max(1, shards)
    if requested == "auto" and size >= per_shard:
        return Choice("members", f"the ES state that ask reads ({size:,} B) is not smaller "
                      f"than a shard of members ({per_shard:,.0f} B)"), None
    if digest(drawer.draw(wire)) != digest(population):
        return Choice("members", f"{type(ask.algorithm).__name__}.ask did not redraw the same "
                      "members from the same key, state and params"), None
    return Choice("recipe", f"{size:,} B of ES state per worker and generation instead of "
                  f"{per_shard:,.0f} B of members per shard"), drawer
