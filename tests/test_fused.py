"""The optional fused kernel (model.kernel: fused, vsml_es/fused.py, csrc/) against the pure-JAX
path and the independent NumPy oracle, on whole episodes: single and deep networks, with and
without the backward pass, LayerNorm and masked outputs, every instruction-set variant this
CPU runs; and the refusals (gradients, conv layers, other state sizes, not built).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import oracle_vsml as oracle
import pytest
from test_oracle import (
    EPISODES,
    MASKED_EPISODES,
    OPTION_EPISODES,
    TOL,
    check_matches,
    option_configs,
    option_params,
    random_params,
    run_fast,
    stream,
)

from vsml_es import fused
from vsml_es.config import ConvLayerConfig, ModelConfig, load_config
from vsml_es.episodes import population_fitness
from vsml_es.errors import ConfigError
from vsml_es.experiment import validate
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.tasks import load_task

built = pytest.mark.skipif(
    not fused.available(),
    reason="the fused kernel (vsml_es._fused) is not built here: no C++ compiler at install")


def isas() -> list[str]:
    """The kernel's variants this CPU can run (VSML_ES_FUSED_ISA selects one)."""
    if not fused.available():
        return ["generic"]
    order = ["avx512", "avx2", "generic"]
    return order[order.index(fused.isa()):]


def both(model: ModelConfig, params: dict, xs: np.ndarray, ys: np.ndarray, n_out: int,
         seed: int, live: int | None = None) -> tuple:
    """The same episode with the pure-JAX kernel and with the fused one."""
    pure = run_fast(model, params, xs, ys, n_out, seed, live=live)
    fast = run_fast(dataclasses.replace(model, kernel="fused"), params, xs, ys, n_out, seed,
                    live=live)
    return pure, fast


def assert_same(pure, fast) -> None:
    np.testing.assert_allclose(fast.logits, pure.logits, **TOL, err_msg="logits")
    np.testing.assert_allclose(fast.losses, pure.losses, **TOL, err_msg="losses")
    for li, ((h, c), (h0, c0)) in enumerate(zip(fast.states, pure.states, strict=True)):
        np.testing.assert_allclose(h, h0, **TOL, err_msg=f"final h of layer {li}")
        np.testing.assert_allclose(c, c0, **TOL, err_msg=f"final c of layer {li}")


# Every episode in the variant this CPU runs, two of them in the lower variants as well.
ISA_EPISODES = [(name, isa) for isa in isas() for name in EPISODES
                if isa == isas()[0] or name in ("deep-bwd-label", "single")]


@built
@pytest.mark.parametrize("name, isa", ISA_EPISODES)
def test_fused_episode_matches_oracle_and_jax(name: str, isa: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every switch of test_oracle's episodes (single, deep, two hidden layers; backward pass,
    label, 1 or 2 micro ticks), against the oracle and the pure-JAX kernel."""
    monkeypatch.setenv("VSML_ES_FUSED_ISA", isa)
    n_in, hidden, n_out, backward, label, ticks = EPISODES[name]
    model = ModelConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                        micro_ticks=ticks)
    cfg = oracle.OracleConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                              micro_ticks=ticks)
    seed = sorted(EPISODES).index(name)
    params = random_params(seed)
    xs, ys = stream(seed + 1, n_in, n_out)
    pure, fast = both(model, params, xs, ys, n_out, seed + 2)
    want = oracle.run_episode(params, cfg, xs, ys, fast.initial)
    check_matches(fast, want)
    assert_same(pure, fast)


@built
@pytest.mark.parametrize("name", ["single-ln", "deep-bwd-ln-label", "deep2-all"])
def test_fused_options_match_oracle(name: str) -> None:
    """LayerNorm, layer-wise and separate backward LSTMs run through the kernel too."""
    n_in, _, n_out = OPTION_EPISODES[name][:3]
    model, cfg = option_configs(name)
    seed = 40 + sorted(OPTION_EPISODES).index(name)
    params = option_params(seed, model)
    xs, ys = stream(seed + 1, n_in, n_out)
    pure, fast = both(model, params, xs, ys, n_out, seed + 2)
    check_matches(fast, oracle.run_episode(params, cfg, xs, ys, fast.initial))
    assert_same(pure, fast)


@built
@pytest.mark.parametrize("name", list(MASKED_EPISODES))
def test_fused_masked_outputs_match_oracle(name: str) -> None:
    """Per-dataset outputs: the backward mean over live outputs is the kernel's masked sum."""
    hidden, backward, label, ln = MASKED_EPISODES[name]
    n_in, wide, live = 6, 9, 4
    model = ModelConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                        layer_norm=ln)
    cfg = oracle.OracleConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                              layer_norm=ln)
    seed = 60 + sorted(MASKED_EPISODES).index(name)
    params = option_params(seed, model)
    xs, ys = stream(seed + 1, n_in, live)
    pure, fast = both(model, params, xs, ys, wide, seed + 2, live=live)
    narrow = [(h, c) if li < len(hidden) else (h[:, :live], c[:, :live])
              for li, (h, c) in enumerate(fast.initial)]
    check_matches(fast, oracle.run_episode(params, cfg, xs, ys, narrow), live)
    assert_same(pure, fast)


@built
@pytest.mark.parametrize("isa", isas())
def test_fused_wide_deep_episode_matches_oracle(isa: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of several vector blocks plus a tail (100 = 6 x 16 + 4 inputs, 37 hidden units),
    a hidden layer, the backward pass: the kernel's blocking, against the oracle."""
    monkeypatch.setenv("VSML_ES_FUSED_ISA", isa)
    model = ModelConfig(hidden_layers=(37,), backward_pass=True, feed_label=True)
    cfg = oracle.OracleConfig(hidden_layers=(37,), backward_pass=True, feed_label=True)
    params = random_params(7)
    xs, ys = stream(8, 100, 5)
    pure, fast = both(model, params, xs, ys, 5, 9)
    check_matches(fast, oracle.run_episode(params, cfg, xs, ys, fast.initial))
    assert_same(pure, fast)


@built
@pytest.mark.parametrize("hidden", [(), (16,)])
def test_fused_population_fitness_matches_jax(hidden: tuple[int, ...]) -> None:
    """ES's own evaluation (vmapped members, real digits episodes, masked by nothing): the
    fitness and accuracy of 4 members agree with the pure-JAX kernel's to 1e-5."""
    task, data = load_task("digits", "train", 30, 10)
    model = ModelConfig(hidden_layers=hidden)
    base = {k: jnp.asarray(v) for k, v in random_params(3).items()}
    keys = jax.random.split(jax.random.key(4), len(base))
    pop = {name: v + 0.05 * jax.random.normal(k, (4, *v.shape))
           for k, (name, v) in zip(keys, sorted(base.items()), strict=True)}
    ids = jnp.arange(4, dtype=jnp.int32)
    results = [population_fitness(pop, jnp.int32(0), jnp.int32(0), ids, data, task,
                                  VsmlLearner(dataclasses.replace(model, kernel=k)), "mean_loss")
               for k in ("jax", "fused")]
    (fit_jax, acc_jax), (fit_fused, acc_fused) = results
    np.testing.assert_allclose(fit_fused, fit_jax, **TOL)
    np.testing.assert_array_equal(acc_fused, acc_jax)


@built
def test_fused_refuses_gradients() -> None:
    params = {k: jnp.asarray(v) for k, v in random_params(0).items()}
    xs, ys = stream(1, 5, 3)
    init, step = VsmlLearner(ModelConfig(kernel="fused")).make(params, 5, 3)

    def loss(p: dict) -> jax.Array:
        init_p, step_p = VsmlLearner(ModelConfig(kernel="fused")).make(p, 5, 3)
        _, logits = step_p(init_p(jax.random.key(0)), jnp.asarray(xs[0]), jnp.asarray(ys[0]))
        return logits.sum()

    with pytest.raises(NotImplementedError, match="forward only"):
        jax.grad(loss)(params)


def config_with(*overrides: str):
    return load_config(None, list(overrides))


@pytest.mark.parametrize("overrides, match", [
    (("model.kernel=cuda",), "valid values: jax, fused"),
    (("model.kernel=fused", "model.state_size=8"), "state_size 8"),
    (("model.kernel=fused", "training.method=backprop"), "forward only"),
])
def test_fused_config_refusals(overrides: tuple[str, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(config_with(*overrides))


def test_fused_refuses_conv_layers() -> None:
    config = config_with("model.kernel=fused")
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, conv_layers=(ConvLayerConfig(2, 3, 2),)))
    with pytest.raises(ConfigError, match="conv layers"):
        fused.check_config(config)


def test_fused_not_built_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension, asking for it is a user error (exit 2) that says how to build
    it; the default kernel needs nothing."""
    monkeypatch.setattr(fused, "available", lambda: False)
    with pytest.raises(ConfigError, match="not built"):
        validate(config_with("model.kernel=fused"))
    validate(config_with())
