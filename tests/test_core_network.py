"""The factored fast path computes exactly the straightforward per-connection VSML."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from vsml_es import reference, vsml
from vsml_es.config import ModelConfig
from vsml_es.episodes import learner_episode
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.tasks import load_task


def random_params(key: jax.Array, model: ModelConfig, scale: float = 3.0) -> vsml.Params:
    """Larger than init so that gates saturate differently and errors would show."""
    params = vsml.init_params(key, model)
    keys = jax.random.split(key, len(params))
    return {
        name: value * scale + 0.3 * jax.random.normal(k, value.shape)
        for k, (name, value) in zip(keys, sorted(params.items()), strict=True)
    }


@pytest.mark.parametrize("n_in,n_out", [(5, 3), (1, 7)])
def test_layer_fast_path_matches_reference(n_in: int, n_out: int) -> None:
    model = ModelConfig()
    key = jax.random.key(0)
    params = random_params(key, model)
    (state,) = vsml.init_layer_states(jax.random.key(1), model, [(n_in, n_out)])
    state = vsml.LayerState(state.h + 0.5 * jax.random.normal(key, state.h.shape), state.c)
    fwd = jax.random.normal(jax.random.key(2), (n_in, model.message_size))
    bwd = jax.random.normal(jax.random.key(3), (n_out, model.message_size))
    check_fast_against_reference(params, state, fwd, bwd, model.micro_ticks)


def check_fast_against_reference(params, state, fwd, bwd, ticks, mask=None) -> tuple:
    """The fast layer and the per-connection reference: in float64 to float64's rounding, and
    each in float32 within float32's rounding of its float64 run (tests/numerics.py: a chain
    of ``ticks`` updates, means over the layer's widest side). Returns the float32 fast
    result."""
    args = (params, state, fwd, bwd)
    runs = {}
    for dtype in (jnp.float32, jnp.float64):
        with jax.enable_x64(dtype == jnp.float64):
            p, st, f, b = numerics.as_dtype(args, dtype)
            m = None if mask is None else jnp.asarray(mask, dtype)
            runs[dtype] = [jax.tree.leaves(fn(p, st, f, b, ticks, m)) for fn in (
                vsml.layer_ticks, reference.layer_ticks_reference)]
    (fast32, slow32), (fast64, slow64) = runs[jnp.float32], runs[jnp.float64]
    ops = numerics.ops_per_update(max(fwd.shape[0], bwd.shape[0]))
    scale = numerics.scale_of(slow64)
    tol32, tol64 = (numerics.bound(u, ticks, ops, scale) for u in (numerics.U32, numerics.U64))
    names = ("h", "c", "forward message", "backward message")
    for name, a32, b32, a64, b64 in zip(names, fast32, slow32, fast64, slow64, strict=True):
        assert a64.dtype == jnp.float64
        numerics.assert_within(a64, b64, tol64, f"float64 fast vs reference {name}")
        numerics.assert_within(a32, a64, tol32, f"float32 fast {name}")
        numerics.assert_within(b32, b64, tol32, f"float32 reference {name}")
    return runs[jnp.float32][0]


@pytest.mark.parametrize(
    "hidden,backward_pass,feed_label",
    [((), True, False), ((6,), True, True), ((6,), False, False)],
)
def test_episode_fast_path_matches_reference(hidden, backward_pass, feed_label) -> None:
    model = ModelConfig(hidden_layers=hidden, backward_pass=backward_pass, feed_label=feed_label)
    task, data = load_task("digits", "train", 12, 10)
    params = random_params(jax.random.key(4), model)
    key = jax.random.key(5)
    fast_loss, fast_acc = learner_episode(VsmlLearner(model), params, key, data, task)
    slow_loss, slow_acc = learner_episode(
        VsmlLearner(model, reference.layer_ticks_reference), params, key, data, task
    )
    np.testing.assert_allclose(fast_loss, slow_loss, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(fast_acc, slow_acc)
    # The network is not trivially constant: predictions differ across the episode.
    assert float(jnp.std(fast_loss)) > 1e-4


def test_parameter_count_matches_paper() -> None:
    model = ModelConfig()
    params = vsml.init_params(jax.random.key(0), model)
    assert sum(p.size for p in params.values()) == vsml.num_params(model) == 2384


def test_initial_state_half_random_half_zero() -> None:
    model = ModelConfig()
    (state,) = vsml.init_layer_states(jax.random.key(0), model, [(400, 10)])
    assert float(jnp.abs(state.h).max()) == 0.0
    assert float(jnp.abs(state.c[..., 8:]).max()) == 0.0
    std = float(jnp.std(state.c[..., :8]))
    # truncated normal (±2σ) has std ≈ 0.88σ, σ = 1/sqrt(400)
    assert 0.8 / 20 < std < 0.95 / 20


def test_error_of_previous_example_arrives_late_without_backward_pass() -> None:
    """Without a backward pass the first prediction cannot depend on any label."""
    model = ModelConfig(backward_pass=False)
    params = random_params(jax.random.key(1), model)
    sizes = vsml.layer_sizes(model, 4, 3)
    net = vsml.init_net_state(jax.random.key(2), model, sizes)
    x = jnp.arange(4.0)
    _, logits_a = vsml.learn_step(params, net, x, jnp.int32(0), model)
    _, logits_b = vsml.learn_step(params, net, x, jnp.int32(2), model)
    np.testing.assert_array_equal(logits_a, logits_b)
    # ...but the second prediction does.
    net_a, _ = vsml.learn_step(params, net, x, jnp.int32(0), model)
    net_b, _ = vsml.learn_step(params, net, x, jnp.int32(2), model)
    _, second_a = vsml.learn_step(params, net_a, x, jnp.int32(0), model)
    _, second_b = vsml.learn_step(params, net_b, x, jnp.int32(0), model)
    assert float(jnp.abs(second_a - second_b).max()) > 1e-6


def test_logits_are_bounded() -> None:
    model = ModelConfig(output_bound=3.0)
    params = random_params(jax.random.key(3), model, scale=50.0)
    sizes = vsml.layer_sizes(model, 4, 3)
    net = vsml.init_net_state(jax.random.key(2), model, sizes)
    _, logits = vsml.learn_step(params, net, jnp.full((4,), 100.0), jnp.int32(0), model)
    assert float(jnp.abs(logits).max()) <= 3.0


@pytest.mark.parametrize("layer_norm,masked", [(True, False), (False, True), (True, True)])
def test_layer_fast_path_matches_reference_with_options(layer_norm: bool, masked: bool) -> None:
    """Message LayerNorm (per connection, before the mean) and the live-output mask of the
    backward mean (task.per_dataset_outputs) agree between the two formulations."""
    model = ModelConfig(layer_norm=layer_norm)
    params = random_params(jax.random.key(0), model)
    (state,) = vsml.init_layer_states(jax.random.key(1), model, [(5, 6)])
    state = vsml.LayerState(state.h + 0.5 * jax.random.normal(jax.random.key(4), state.h.shape),
                            state.c)
    fwd = jax.random.normal(jax.random.key(2), (5, model.message_size))
    bwd = jax.random.normal(jax.random.key(3), (6, model.message_size))
    mask = vsml.output_mask(jnp.int32(4), 6) if masked else None
    _, _, *messages = check_fast_against_reference(params, state, fwd, bwd, model.micro_ticks,
                                                   mask)
    fast = vsml.layer_ticks(params, state, fwd, bwd, model.micro_ticks, mask)
    assert all(np.array_equal(a, b) for a, b in zip(fast[1:], messages, strict=True))
    plain = vsml.layer_ticks(params, state, fwd, bwd, model.micro_ticks)
    if masked:  # the mask changes the backward message, nothing else
        assert np.abs(plain[2] - fast[2]).max() > 1e-3
        np.testing.assert_array_equal(plain[1], fast[1])
