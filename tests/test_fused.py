"""The optional fused kernel (model.kernel: fused, vsml_es/fused.py, csrc/) against the pure-JAX
path and the independent NumPy oracle, on whole episodes: single and deep networks, with and
without the backward pass, LayerNorm and masked outputs, every instruction-set variant this
CPU runs; and the refusals (gradients, conv layers, other state sizes, not built).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import oracle_vsml as oracle
import pytest
from test_oracle import (
    EPISODES,
    MASKED_EPISODES,
    OPTION_EPISODES,
    check_matches,
    option_configs,
    option_params,
    random_params,
    run_fast,
    stream,
    tolerances,
)

from vsml_es import fused, vsml
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
    """The kernel's variants this CPU can run, best first; only the one VSML_ES_FUSED_ISA
    names where it is set (CI runs this file once per variant)."""
    if not fused.available():
        return ["generic"]
    fused.check_isa_env()
    return [os.environ[fused.ISA_ENV]] if os.environ.get(fused.ISA_ENV) else (
        fused.supported_isas())


def both(model: ModelConfig, params: dict, xs: np.ndarray, ys: np.ndarray, n_out: int,
         seed: int, live: int | None = None) -> tuple:
    """The same episode with the pure-JAX kernel and with the fused one."""
    pure = run_fast(model, params, xs, ys, n_out, seed, live=live)
    fast = run_fast(dataclasses.replace(model, kernel="fused"), params, xs, ys, n_out, seed,
                    live=live)
    return pure, fast


def check_fused(model: ModelConfig, want: oracle.Episode, pure, fast, n_in: int, n_out: int,
                live: int | None = None) -> None:
    """Both float32 kernels within float32's bound of the float64 oracle, hence within twice
    that bound of each other (checked too, element by element of every result)."""
    tol = tolerances(model, want, n_in, n_out)[np.float32]
    check_matches(fast, want, live, tol=tol)
    check_matches(pure, want, live, tol=tol)
    numerics.assert_within(fast.logits, pure.logits, 2 * tol, "logits, fused vs jax")
    numerics.assert_within(fast.losses, pure.losses, 2 * tol, "losses, fused vs jax")
    for li, ((h, c), (h0, c0)) in enumerate(zip(fast.states, pure.states, strict=True)):
        numerics.assert_within(h, h0, 2 * tol, f"final h of layer {li}, fused vs jax")
        numerics.assert_within(c, c0, 2 * tol, f"final c of layer {li}, fused vs jax")


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
    check_fused(model, want, pure, fast, n_in, n_out)


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
    check_fused(model, oracle.run_episode(params, cfg, xs, ys, fast.initial), pure, fast, n_in,
                n_out)


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
    check_fused(model, oracle.run_episode(params, cfg, xs, ys, narrow), pure, fast, n_in, wide,
                live)


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
    check_fused(model, oracle.run_episode(params, cfg, xs, ys, fast.initial), pure, fast, 100, 5)


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
    # Not yet derived from the computation (docs/testing.md, open items): the members' initial
    # states are drawn inside the episode, so a float64 run of it draws other ones.
    np.testing.assert_allclose(fit_fused, fit_jax, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(acc_fused, acc_jax)


@built
@pytest.mark.parametrize("isa", isas())
@pytest.mark.parametrize("n_in, n_out, masked, ln", [(100, 37, False, False), (7, 9, True, False),
                                                    (20, 5, True, True)],
                         ids=["tails", "masked", "masked-ln"])
def test_fused_layer_call_matches_float64(isa: str, n_in: int, n_out: int, masked: bool,
                                          ln: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """One call of the kernel (2 micro ticks of one layer from a random state) against the
    pure-JAX layer in float64: a chain of only 2 updates, so the bound of tests/numerics.py
    is 5e-5 to 2e-4 here and a small slip in the kernel shows (a cell scaled by 1.0001 per
    tick fails), on every variant this CPU runs."""
    monkeypatch.setenv(fused.ISA_ENV, isa)
    model = ModelConfig(layer_norm=ln)
    params = option_params(5, model)
    rng = np.random.default_rng(6)
    h = np.tanh(rng.standard_normal((16, n_out, n_in))).astype(np.float32)
    c = (2 * rng.standard_normal((16, n_out, n_in))).astype(np.float32)
    fwd_in = rng.standard_normal((n_in, 8)).astype(np.float32)
    bwd_in = rng.standard_normal((n_out, 8)).astype(np.float32)
    mask = (np.arange(n_out) < n_out - 3).astype(np.float32) if masked else None
    args = (vsml.LayerState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(fwd_in),
            jnp.asarray(bwd_in), 2, None if mask is None else jnp.asarray(mask))
    jparams = {k: jnp.asarray(v) for k, v in params.items()}
    (hf, cf), fwd_f, bwd_f = jax.jit(fused.layer_ticks, static_argnums=4)(jparams, *args)
    with jax.enable_x64(True):
        p64, a64 = numerics.as_dtype((params, args[:3]), jnp.float64)
        m64 = None if mask is None else jnp.asarray(mask, jnp.float64)
        (h64, c64), fwd64, bwd64 = vsml.fast_layer_ticks(p64, *a64, 2, m64)
        want = [np.asarray(a) for a in (h64, c64, fwd64, bwd64)]
    tol = numerics.bound(numerics.U32, 2, numerics.ops_per_update(max(n_in, n_out)),
                         numerics.scale_of(want))
    for name, got, expected in zip(("h", "c", "forward message", "backward message"),
                                   (hf, cf, fwd_f, bwd_f), want, strict=True):
        numerics.assert_within(got, expected, tol, f"{isa} {name}")


def test_fused_isa_override_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """VSML_ES_FUSED_ISA names a variant this CPU runs, or it is a ConfigError that says which
    it runs (never a silent fall-back to another variant)."""
    monkeypatch.setenv(fused.ISA_ENV, "avx1024")
    with pytest.raises(ConfigError, match="valid values: avx512, avx2, generic"):
        fused.check_isa_env()
    if fused.available():
        monkeypatch.setenv(fused.ISA_ENV, "generic")
        assert fused.isa() == "generic"
        missing = [name for name in fused.ISAS if name not in fused.supported_isas()]
        for name in missing:  # e.g. avx512 on a CPU with AVX2 only
            monkeypatch.setenv(fused.ISA_ENV, name)
            with pytest.raises(ConfigError, match="this CPU cannot run it"):
                fused.isa()


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
