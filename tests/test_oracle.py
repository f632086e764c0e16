"""Whole episodes of the real VSML learner against the independent NumPy oracle (oracle_vsml.py).

The learner runs exactly as ES and the meta-test run it (``VsmlLearner.make`` -> init, step;
losses from ``episodes.run_online``, the loop under every online episode). The only thing
shared with the oracle is the initial state, converted from the fast layout;
``test_initial_states_follow_official_init`` checks that state's distribution on its own.
Parameters are random, not the initial ones, with the input gate opened so that the states
(the "weights") move within an episode.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import oracle_vsml as oracle
import pytest

from vsml_es.config import ConvLayerConfig, ModelConfig
from vsml_es.episodes import run_online
from vsml_es.learners.vsml import VsmlLearner

STEPS = 20


class Stream(NamedTuple):
    """The task interface of ``episodes.run_online`` on one fixed stream (x_t, y_t)."""

    episode_length: int

    def episode(self, key: jax.Array) -> jax.Array:
        return jnp.zeros(())

    def example(self, data: Any, spec: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return data[0][t], data[1][t]


def random_params(seed: int, gate_scale: float = 1.5, logit_scale: float = 1.0,
                  s: int = oracle.STATE_SIZE, m: int = oracle.MESSAGE_SIZE) -> dict[str, Any]:
    """Random float32 parameters in the official layout. The input-gate bias is raised by 2.5
    (sigmoid(i - 5) ~ 0.09 instead of ~0.007) so cells change visibly in 20 steps, the forget
    gate's lowered by 1 so they also forget, and the gate pre-activations stay O(1): no gate
    saturates (|pre-activation| > 4.6 in < 2% of i, g, o), so every term shows."""
    rng = np.random.default_rng(seed)
    fan = 2 * m + s

    def normal(*shape: int, std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    lstm_b = normal(4 * s, std=0.5)
    lstm_b[:s] += 2.5
    lstm_b[2 * s : 3 * s] -= 1.0
    params = {
        "lstm_w": normal(fan, 4 * s, std=gate_scale / np.sqrt(fan)),
        "lstm_b": lstm_b,
        "fwd_w": normal(s, m, std=2.0 / np.sqrt(s)),
        "fwd_b": normal(m, std=0.3),
        "bwd_w": normal(s, m, std=2.0 / np.sqrt(s)),
        "bwd_b": normal(m, std=0.3),
    }
    params["fwd_w"][:, oracle.OUTPUT_IDX] *= logit_scale
    params["fwd_b"][oracle.OUTPUT_IDX] *= logit_scale
    return params


def stream(seed: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardized-looking inputs; every class appears, labels repeat (something to learn)."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((STEPS, n_in)).astype(np.float32)
    ys = rng.permutation(np.arange(STEPS) % n_out).astype(np.int32)
    return xs, ys


def to_oracle_layout(a: jax.Array) -> np.ndarray:
    """The fast path's per-layer state [s, n_out, n_in] -> the oracle's [n_in, n_out, s]."""
    return np.transpose(np.asarray(a, np.float64), (2, 1, 0))


class Sizes(NamedTuple):
    """What ``Learner.make_for`` reads of a task."""

    num_features: int
    num_outputs: int
    input_shape: tuple[int, ...]


class FastEpisode(NamedTuple):
    logits: np.ndarray
    losses: np.ndarray
    initial: list[tuple[np.ndarray, np.ndarray]]
    states: list[tuple[np.ndarray, np.ndarray]]
    next_bwd: list[np.ndarray]


def run_fast(model: ModelConfig, params: dict[str, Any], xs: np.ndarray, ys: np.ndarray,
             n_out: int, seed: int, live: int | None = None,
             input_shape: tuple[int, ...] = (), dtype: Any = np.float32) -> FastEpisode:
    """The learner as ES runs it: per-step logits, online losses, first and last states.
    With ``live``, per-dataset outputs: ``n_out`` wide, the first ``live`` used. With conv
    layers the learner is made as the episode code makes it for a task of ``input_shape``.
    ``dtype`` float64 runs the same episode (the same float32 parameters, stream and initial
    state, widened) in float64, where the oracle is held to float64's rounding."""
    live_count = None if live is None else jnp.int32(live)
    task = Sizes(xs.shape[1], n_out, input_shape)
    init, _ = VsmlLearner(model).make_for({k: jnp.asarray(v) for k, v in params.items()}, task,
                                          live_count)
    net0 = init(jax.random.key(seed))  # drawn in float32, whatever dtype runs the episode
    with jax.enable_x64(dtype == np.float64):
        jparams, net0_run = numerics.as_dtype((params, net0), dtype)
        _, step = VsmlLearner(model).make_for(jparams, task, live_count)

        @jax.jit
        def episode(net0: Any, xs: jax.Array, ys: jax.Array) -> tuple[Any, ...]:
            final, logits = jax.lax.scan(lambda net, xy: step(net, *xy), net0, (xs, ys))
            losses, _ = run_online(lambda _: net0, step, jax.random.key(0), jnp.zeros(()),
                                   (xs, ys), Stream(len(xs)), live_count)
            return logits, losses, final

        logits, losses, final = episode(net0_run, jnp.asarray(xs, dtype), jnp.asarray(ys))
        assert logits.dtype == dtype

    def layers(net: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        # Conv layers keep the official layout [k, k, in_c, out_c, s] in the fast path too.
        return [(np.asarray(ls.h, np.float64), np.asarray(ls.c, np.float64))
                if li < len(model.conv_layers)
                else (to_oracle_layout(ls.h), to_oracle_layout(ls.c))
                for li, ls in enumerate(net.layers)]

    return FastEpisode(np.asarray(logits), np.asarray(losses), layers(net0), layers(final),
                       [np.asarray(p) for p in final.pending])


def episode_updates(model: ModelConfig, steps: int = STEPS) -> int:
    """Dependent LSTM updates in an episode of ``model`` (tests/numerics.py)."""
    layers = len(model.conv_layers) + len(model.hidden_layers) + 1
    return numerics.lstm_updates(steps, model.micro_ticks, layers, model.backward_pass)


def widest(model: ModelConfig, n_in: int, n_out: int,
           input_shape: tuple[int, ...] = ()) -> int:
    """The longest mean in the network: a layer's inputs or outputs (a conv layer's message
    positions, or its output positions that a connection's state is averaged over, times its
    kernel: both counted generously as the whole image)."""
    sizes = [n_in, n_out, *model.hidden_layers]
    if model.conv_layers:
        sizes.append(int(np.prod(input_shape)) * max(c.kernel ** 2 * c.channels
                                                     for c in model.conv_layers))
    return max(sizes)


def tolerances(model: ModelConfig, want: oracle.Episode, n_in: int, n_out: int,
               input_shape: tuple[int, ...] = ()) -> dict[Any, float]:
    """The error bound of tests/numerics.py for this episode, at float32's and float64's unit
    roundoff, scaled by the oracle's largest logit, loss or state."""
    scale = numerics.scale_of([want.logits, want.losses, *(a for hc in want.states for a in hc)])
    updates = episode_updates(model)
    ops = numerics.ops_per_update(widest(model, n_in, n_out, input_shape))
    return {dtype: numerics.bound(u, updates, ops, scale)
            for dtype, u in ((np.float32, numerics.U32), (np.float64, numerics.U64))}


def compare_episode(model: ModelConfig, cfg: oracle.OracleConfig, n_in: int, n_out: int,
                    seed: int, **param_kw: float) -> tuple[FastEpisode, oracle.Episode]:
    """The fast path in float32 and in float64 against the oracle, each to its bound."""
    params = random_params(seed, **param_kw)
    xs, ys = stream(seed + 1, n_in, n_out)
    fast = run_fast(model, params, xs, ys, n_out, seed + 2)
    want = oracle.run_episode(params, cfg, xs, ys, fast.initial)
    tol = tolerances(model, want, n_in, n_out)
    check_matches(fast, want, tol=tol[np.float32])
    fast64 = run_fast(model, params, xs, ys, n_out, seed + 2, dtype=np.float64)
    check_matches(fast64, want, tol=tol[np.float64])
    return fast, want


# (n_in, hidden, n_out, backward_pass, feed_label, micro_ticks): every switch on and off, in
# one and two VSML layers, and one net with two hidden layers (a message through a middle layer).
EPISODES = {
    "single-bwd": (7, (), 3, True, False, 2),
    "single-label-1tick": (7, (), 3, False, True, 1),
    "single": (7, (), 3, False, False, 2),
    "deep-bwd-label": (6, (5,), 3, True, True, 2),
    "deep-label": (6, (5,), 3, False, True, 2),
    "deep-bwd-1tick": (6, (5,), 3, True, False, 1),
    "deep2-bwd-label-1tick": (6, (5, 4), 3, True, True, 1),
    "deep2": (6, (5, 4), 3, False, False, 1),
}


@pytest.mark.parametrize("name", list(EPISODES))
def test_full_episode_matches_oracle(name: str) -> None:
    n_in, hidden, n_out, backward, label, ticks = EPISODES[name]
    # Only the switches are set: the defaults (sizes, bound, init scale) are checked as well.
    model = ModelConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                        micro_ticks=ticks)
    cfg = oracle.OracleConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                              micro_ticks=ticks)
    seed = sorted(EPISODES).index(name)
    fast, want = compare_episode(model, cfg, n_in, n_out, seed)
    # The trajectory is not trivial: every output's logit moves over the episode, the cells'
    # zero-initialized half fills, and the labels steer it (other labels, other predictions
    # by far more than the tolerance), so the error path is exercised.
    assert np.ptp(want.logits, axis=0).min() > 0.05
    assert np.abs(want.states[-1][1][..., oracle.STATE_SIZE // 2:]).max() > 0.5
    xs, ys = stream(seed + 1, n_in, n_out)
    relabeled = oracle.run_episode(random_params(seed), cfg, xs, (ys + 1) % n_out, fast.initial)
    assert np.abs(relabeled.logits[-5:] - want.logits[-5:]).max() > 1e-2


def test_bounded_logits_match_oracle() -> None:
    """Logits of tens of units, where 100·tanh(z/100) is far from z and from 50·tanh(z/50)."""
    fast, want = compare_episode(ModelConfig(backward_pass=True),
                                 oracle.OracleConfig(backward_pass=True), 7, 3, 11,
                                 logit_scale=40.0)
    assert np.abs(want.logits).max() > 20.0


def test_oracle_hidden_layer_sees_previous_backward_message() -> None:
    """The official routing (models.VSMLRNN._tick) that the deep tests hold the fast path to:
    with a backward pass, a hidden layer's next forward tick gets what the layer above sent it
    in the backward pass, and that changes the prediction; the last layer gets zeros."""
    cfg = oracle.OracleConfig(hidden_layers=(4,), backward_pass=True, feed_label=True)
    params = {k: v.astype(np.float64) for k, v in random_params(3).items()}
    xs, ys = stream(4, 5, 3)
    initial = oracle.initial_states(np.random.default_rng(5), oracle.layer_sizes(cfg, 5, 3))
    one = oracle.run_episode(params, cfg, xs[:1], ys[:1], initial)
    assert np.abs(one.layers[0].incoming_bwd).max() > 1e-3
    assert not np.any(one.error)
    two = oracle.run_episode(params, cfg, xs[:2], ys[:2], initial)
    again = oracle.tick(params, cfg, copy.deepcopy(one.layers), one.error, xs[1], reverse=False)
    np.testing.assert_array_equal(two.logits[1], again)
    zeroed = copy.deepcopy(one.layers)
    zeroed[0].incoming_bwd = np.zeros_like(zeroed[0].incoming_bwd)
    without = oracle.tick(params, cfg, zeroed, one.error, xs[1], reverse=False)
    assert np.abs(again - without).max() > 1e-4


def test_initial_states_follow_official_init() -> None:
    """Per episode: h = 0; c's first half truncated normal (±2σ), σ = 1/sqrt(n_in) of the
    layer (recurrent.CustomLSTM.initial_vsml_state), second half 0; fresh per episode."""
    model = ModelConfig(hidden_layers=(100,))
    sizes = [(400, 100), (100, 40)]
    params = random_params(0)
    init, _ = VsmlLearner(model).make({k: jnp.asarray(v) for k, v in params.items()}, 400, 40)
    first = init(jax.random.key(0))
    other = init(jax.random.key(1))
    half = oracle.STATE_SIZE // 2
    numpy_draw = oracle.initial_states(np.random.default_rng(0), sizes)
    for li, ((n_in, _), state) in enumerate(zip(sizes, first.layers, strict=True)):
        h, c = to_oracle_layout(state.h), to_oracle_layout(state.c)
        assert h.shape == c.shape == (n_in, sizes[li][1], oracle.STATE_SIZE)
        assert not np.any(h), f"layer {li}: h starts at 0"
        assert not np.any(c[..., half:]), f"layer {li}: second half of c starts at 0"
        sigma = oracle.initial_cell_std(n_in)
        for name, random_half in [("fast path", c[..., :half]),
                                  ("oracle", numpy_draw[li][1][..., :half])]:
            assert abs(random_half.std() / (sigma * oracle.truncated_std()) - 1) < 0.02, name
            assert abs(random_half.mean()) < 0.02 * sigma, name
            assert 1.95 * sigma < np.abs(random_half).max() <= 2.0 * sigma * (1 + 1e-6), name
        assert not np.allclose(c, to_oracle_layout(other.layers[li].c))


# --- the paper's deep variants (issue 13 item 4) and per-dataset outputs (item 1)


def option_params(seed: int, model: ModelConfig) -> dict[str, Any]:
    """Random parameters in the layout of ``model``'s options: one ``random_params`` set per
    layer (layerwise) and per pass (separate backward LSTM), LayerNorm scales near 1 and
    offsets near 0 but far enough from them that a dropped or swapped term shows."""
    layers = len(model.conv_layers) + len(model.hidden_layers) + 1
    passes = ["", "back_"] if model.separate_backward_lstm else [""]
    params: dict[str, Any] = {}
    for pi, prefix in enumerate(passes):
        sets = []
        for li in range(layers if model.layerwise_lstms else 1):
            one = random_params(seed + 100 * pi + 10 * li)
            if model.layer_norm:
                rng = np.random.default_rng(seed + 100 * pi + 10 * li + 5)
                for name in ("fwd", "bwd"):
                    m = oracle.MESSAGE_SIZE
                    one[f"{name}_ln_scale"] = (1 + 0.3 * rng.standard_normal(m)).astype(np.float32)
                    one[f"{name}_ln_offset"] = (0.3 * rng.standard_normal(m)).astype(np.float32)
            sets.append(one)
        for name in sets[0]:
            value = np.stack([s[name] for s in sets]) if model.layerwise_lstms else sets[0][name]
            params[prefix + name] = value
    return params


def check_matches(fast: FastEpisode, want: oracle.Episode, live: int | None = None, *,
                  tol: float) -> None:
    """Logits, losses, final states and next backward inputs within ``tol`` (``tolerances``);
    with ``live``, those of the first ``live`` outputs of the fast path's wider last layer."""
    cut = slice(None) if live is None else slice(0, live)
    dtype = fast.logits.dtype.name
    numerics.assert_within(fast.logits[:, cut], want.logits, tol, f"{dtype} logits")
    numerics.assert_within(fast.losses, want.losses, tol, f"{dtype} losses")
    last = len(want.states) - 1
    for li, ((h, c), (h_want, c_want)) in enumerate(zip(fast.states, want.states, strict=True)):
        if li == last:
            h, c = h[:, cut], c[:, cut]
        numerics.assert_within(h, h_want, tol, f"{dtype} final h of layer {li}")
        numerics.assert_within(c, c_want, tol, f"{dtype} final c of layer {li}")
    for li, (got, expected) in enumerate(zip(fast.next_bwd, want.next_bwd, strict=True)):
        got = got[cut] if li == last else got
        expected = expected.reshape(-1, expected.shape[-1])  # a conv layer's: an image
        numerics.assert_within(got, expected, tol, f"{dtype} next bwd input of {li}")


def check_both(model: ModelConfig, params: dict[str, Any], cfg: oracle.OracleConfig,
               xs: np.ndarray, ys: np.ndarray, n_out: int, seed: int, live: int | None = None,
               input_shape: tuple[int, ...] = ()) -> tuple[FastEpisode, oracle.Episode]:
    """The fast path (float32, then float64) against the oracle of the same initial state
    (with ``live``: of a network ``live`` wide), each within its bound."""
    fast = run_fast(model, params, xs, ys, n_out, seed, live=live, input_shape=input_shape)
    initial = fast.initial if live is None else [
        (h, c) if li < len(fast.initial) - 1 else (h[:, :live], c[:, :live])
        for li, (h, c) in enumerate(fast.initial)]
    want = oracle.run_episode(params, cfg, xs, ys, initial)
    tol = tolerances(model, want, xs.shape[1], n_out, input_shape)
    check_matches(fast, want, live, tol=tol[np.float32])
    fast64 = run_fast(model, params, xs, ys, n_out, seed, live=live, input_shape=input_shape,
                      dtype=np.float64)
    check_matches(fast64, want, live, tol=tol[np.float64])
    return fast, want


# (n_in, hidden, n_out, backward_pass, feed_label, micro_ticks, layer_norm, layerwise,
# separate backward LSTM). deep-ln-label is the official deep.yaml; deep-bwd-ln-label the
# dense part of conv.yaml.
OPTION_EPISODES = {
    "single-ln": (7, (), 3, False, False, 2, True, False, False),
    "deep-ln-label": (6, (5,), 3, False, True, 2, True, False, False),
    "deep-bwd-ln-label": (6, (5,), 3, True, True, 2, True, False, False),
    "deep-layerwise": (6, (5,), 3, False, True, 2, False, True, False),
    "deep-bwd-layerwise": (6, (5,), 3, True, False, 1, False, True, False),
    "deep-separate-bwd": (6, (5,), 3, True, True, 2, False, False, True),
    "deep2-all": (6, (5, 4), 3, True, True, 1, True, True, True),
}


def option_configs(name: str) -> tuple[ModelConfig, oracle.OracleConfig]:
    n_in, hidden, n_out, backward, label, ticks, ln, layerwise, separate = OPTION_EPISODES[name]
    model = ModelConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                        micro_ticks=ticks, layer_norm=ln, layerwise_lstms=layerwise,
                        separate_backward_lstm=separate)
    cfg = oracle.OracleConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                              micro_ticks=ticks, layer_norm=ln, layerwise_rnns=layerwise,
                              separate_backward_rnn=separate)
    return model, cfg


def option_off(params: dict[str, Any], cfg: oracle.OracleConfig,
               option: str) -> tuple[dict[str, Any], oracle.OracleConfig]:
    """The same episode with one option switched off: LayerNorm dropped, every layer run by
    layer 0's LSTM, or the backward pass run by the forward LSTM."""
    if option == "layer_norm":
        return params, dataclasses.replace(cfg, layer_norm=False)
    if option == "layerwise_rnns":
        return ({k: v[0] for k, v in params.items()},
                dataclasses.replace(cfg, layerwise_rnns=False))
    return ({k: v for k, v in params.items() if not k.startswith("back_")},
            dataclasses.replace(cfg, separate_backward_rnn=False))


@pytest.mark.parametrize("name", list(OPTION_EPISODES))
def test_option_episode_matches_oracle(name: str) -> None:
    """LayerNorm, layer-wise and separate backward LSTMs: whole episodes against the oracle,
    and each option switched on changes the episode (so each one is really exercised)."""
    n_in, _, n_out = OPTION_EPISODES[name][:3]
    model, cfg = option_configs(name)
    seed = 40 + sorted(OPTION_EPISODES).index(name)
    params = option_params(seed, model)
    xs, ys = stream(seed + 1, n_in, n_out)
    fast, want = check_both(model, params, cfg, xs, ys, n_out, seed + 2)
    assert np.ptp(want.logits, axis=0).min() > 0.05
    for option in ("layer_norm", "layerwise_rnns", "separate_backward_rnn"):
        if getattr(cfg, option):
            p_off, cfg_off = option_off(params, cfg, option)
            off = oracle.run_episode(p_off, cfg_off, xs, ys, fast.initial)
            assert np.abs(off.logits - want.logits).max() > 1e-3, option


# (hidden, backward_pass, feed_label, layer_norm): the backward mean over live outputs matters
# only with a hidden layer; with LayerNorm it is taken over normalized messages.
MASKED_EPISODES = {
    "single-bwd": ((), True, False, False),
    "deep-label": ((5,), False, True, False),
    "deep-bwd-ln-label": ((5,), True, True, True),
}


@pytest.mark.parametrize("name", list(MASKED_EPISODES))
def test_masked_outputs_match_oracle_of_dataset_width(name: str) -> None:
    """Per-dataset outputs: a 9-wide network running a 4-class episode matches, on its live
    outputs, the oracle of a 4-wide network (the official code sizes the output layer by the
    dataset); the same wide network unmasked does not."""
    hidden, backward, label, ln = MASKED_EPISODES[name]
    n_in, wide, live = 6, 9, 4
    model = ModelConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                        layer_norm=ln)
    cfg = oracle.OracleConfig(hidden_layers=hidden, backward_pass=backward, feed_label=label,
                              layer_norm=ln)
    seed = 60 + sorted(MASKED_EPISODES).index(name)
    params = option_params(seed, model)
    xs, ys = stream(seed + 1, n_in, live)
    _, want = check_both(model, params, cfg, xs, ys, wide, seed + 2, live=live)
    # The dead outputs really are there: unmasked, the wide network predicts otherwise.
    unmasked = run_fast(model, params, xs, ys, wide, seed + 2)
    assert np.abs(unmasked.logits[:, :live] - want.logits).max() > 1e-3


# --- conv VSML layers (issue 13 item 5)

# Each: input image (H, W, C), conv layers (channels, kernel, stride), the dense hidden layers,
# outputs, and the switches. conv-bwd-ln-label is the official conv.yaml (conv k3 s2 -> dense,
# backward pass, label, LayerNorm); conv2-* stack two convs as array/conv.yaml's 3-conv does,
# so a conv layer's backward message reaches the conv below it, where the official routing
# (stride mask, offset 1) and the full transposed conv differ.
CONV_EPISODES: dict[str, dict[str, Any]] = {
    "conv-bwd-ln-label": dict(image=(5, 5, 1), convs=((2, 3, 2),), backward_pass=True,
                              feed_label=True, layer_norm=True),
    "conv-nobwd": dict(image=(5, 5, 1), convs=((2, 3, 2),)),
    "conv-s1-hidden-bwd": dict(image=(3, 3, 2), convs=((2, 3, 1),), hidden=(3,),
                               backward_pass=True, micro_ticks=1),
    "conv2-bwd-official": dict(image=(5, 5, 1), convs=((2, 3, 2), (2, 3, 2)),
                               backward_pass=True, feed_label=True, micro_ticks=1),
    "conv2-bwd-full": dict(image=(5, 5, 1), convs=((2, 3, 2), (2, 3, 2)), backward_pass=True,
                           feed_label=True, micro_ticks=1, routing="full"),
    "conv2-label-official": dict(image=(5, 5, 1), convs=((2, 3, 2), (2, 3, 2)),
                                 feed_label=True, micro_ticks=1),
    "conv2-k5-ln-full": dict(image=(3, 3, 1), convs=((2, 3, 1), (1, 5, 1)), backward_pass=True,
                             micro_ticks=1, layer_norm=True, routing="full"),
    "conv2-k1-official": dict(image=(3, 3, 1), convs=((2, 3, 1), (2, 1, 1)),
                              backward_pass=True, micro_ticks=1),
    "conv-layerwise-separate": dict(image=(5, 5, 1), convs=((2, 3, 2),), backward_pass=True,
                                    micro_ticks=1, layerwise=True, separate=True),
}


def conv_configs(name: str) -> tuple[ModelConfig, oracle.OracleConfig]:
    case = {"hidden": (), "backward_pass": False, "feed_label": False, "micro_ticks": 2,
            "layer_norm": False, "routing": "official", "layerwise": False, "separate": False,
            **CONV_EPISODES[name]}
    switches = {k: case[k] for k in ("backward_pass", "feed_label", "micro_ticks",
                                     "layer_norm")}
    model = ModelConfig(
        hidden_layers=case["hidden"], layerwise_lstms=case["layerwise"],
        separate_backward_lstm=case["separate"], conv_backward=case["routing"],
        conv_layers=tuple(ConvLayerConfig(c, k, st) for c, k, st in case["convs"]), **switches)
    cfg = oracle.OracleConfig(
        hidden_layers=case["hidden"], layerwise_rnns=case["layerwise"],
        separate_backward_rnn=case["separate"], conv_layers=case["convs"],
        input_shape=case["image"], conv_routing=case["routing"], **switches)
    return model, cfg


@pytest.mark.parametrize("name", list(CONV_EPISODES))
def test_conv_episode_matches_oracle(name: str) -> None:
    """Conv VSML layers (official vsml_layers.conv2d) in whole episodes against the oracle;
    the trajectory is not trivial, and in stacked convs the backward routing is exercised:
    the oracle with the other routing predicts otherwise."""
    model, cfg = conv_configs(name)
    n_out = 3
    seed = 80 + sorted(CONV_EPISODES).index(name)
    params = option_params(seed, model)
    xs, ys = stream(seed + 1, int(np.prod(cfg.input_shape)), n_out)
    fast, want = check_both(model, params, cfg, xs, ys, n_out, seed + 2,
                            input_shape=cfg.input_shape)
    assert np.ptp(want.logits, axis=0).min() > 0.05
    h, c = want.states[0]
    assert h.shape[:2] == (cfg.conv_layers[0][1],) * 2  # one state per kernel connection
    assert np.abs(c[..., oracle.STATE_SIZE // 2:]).max() > 0.1  # the conv cells learn
    if len(cfg.conv_layers) > 1 and (cfg.backward_pass or not cfg.hidden_layers):
        other = "full" if cfg.conv_routing == "official" else "official"
        routed = oracle.run_episode(params, dataclasses.replace(cfg, conv_routing=other), xs,
                                    ys, fast.initial)
        assert np.abs(routed.logits - want.logits).max() > 1e-4, "routing not exercised"


def test_conv_initial_states_follow_official_init() -> None:
    """A conv layer's state is [k, k, in_c, out_c, s] with h = 0 and the first half of c
    truncated normal with std 1/sqrt(k) (official initial_vsml_state divides by shape[0],
    the kernel size), the rest 0; the dense layer after it starts as a dense layer does."""
    model, cfg = conv_configs("conv-nobwd")
    model = dataclasses.replace(model, conv_layers=(ConvLayerConfig(40, 5, 2),))
    cfg = dataclasses.replace(cfg, conv_layers=((40, 5, 2),), input_shape=(12, 12, 3))
    params = {k: jnp.asarray(v) for k, v in random_params(0).items()}
    init, _ = VsmlLearner(model).make(params, 432, 4, input_shape=(12, 12, 3))
    net = init(jax.random.key(0))
    half = oracle.STATE_SIZE // 2
    h, c = np.asarray(net.layers[0].h), np.asarray(net.layers[0].c)
    assert h.shape == (5, 5, 3, 40, oracle.STATE_SIZE) and not np.any(h)
    assert not np.any(c[..., half:])
    numpy_draw = oracle.initial_conv_states(np.random.default_rng(0), cfg)[0][1]
    sigma = oracle.initial_conv_std(5)
    for label, random_half in [("fast path", c[..., :half]), ("oracle", numpy_draw[..., :half])]:
        assert abs(random_half.std() / (sigma * oracle.truncated_std()) - 1) < 0.03, label
        assert 1.95 * sigma < np.abs(random_half).max() <= 2.0 * sigma * (1 + 1e-6), label
    dense_c = to_oracle_layout(net.layers[1].c)
    assert dense_c.shape[:2] == (6 * 6 * 40, 4)
    assert abs(dense_c[..., :half].std() / (oracle.initial_cell_std(1440)
                                             * oracle.truncated_std()) - 1) < 0.03


def test_conv_layerwise_params_have_one_set_per_layer() -> None:
    """Layer-wise LSTMs with conv layers: the ES starting point has one LSTM set per VSML layer,
    conv layers included (official layerwise_rnns: one SubRNN per layer spec), in the layout the
    oracle reads; a missing set would be read silently clamped to the last one."""
    model, _ = conv_configs("conv-layerwise-separate")
    params = VsmlLearner(model).init_params(jax.random.key(0), 25, 3)
    want = option_params(0, model)
    assert {k: tuple(v.shape) for k, v in params.items()} == {
        k: np.shape(v) for k, v in want.items()}
    assert next(iter(params.values())).shape[0] == 2  # the conv layer and the output layer
