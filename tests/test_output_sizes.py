"""Per-dataset output sizes (issue 13 item 1) and the deep-variant switches' config checks.

With ``task.per_dataset_outputs`` a network as wide as ``task.num_classes`` runs each episode
with its dataset's class count: the outputs beyond it are masked out of the softmax, the
error, the argmax and the loss. The oracle tests (test_oracle.py) hold the masked network to
the official code's narrow one; here the fast path is held to itself at the sizes of the
dataset grid (a 10-class episode in a 47-wide network), and the task pipeline is checked to
pass each episode's class count through.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from vsml_es import vsml
from vsml_es.classifier import load_learner
from vsml_es.cli import main
from vsml_es.config import Config, MetaTestConfig, ModelConfig, TaskConfig, config_to_dict
from vsml_es.data.registry import ArrayDataset
from vsml_es.episodes import learner_episode, masked_logits
from vsml_es.evaluator import LocalEvaluator
from vsml_es.export import export_run
from vsml_es.imitation import Imitation, imitation_episode, imitation_target
from vsml_es.learners.gradient import GradientLearner
from vsml_es.learners.vsml import VsmlLearner
from vsml_es.methods.imitation import ImitationMethod
from vsml_es.storage.learner_file import read_learner_file
from vsml_es.storage.params import save_params
from vsml_es.tasks import MixtureTask, build_task, load_metatest_task, make_task, with_output_mask

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
TOL = {"rtol": 1e-5, "atol": 1e-5}


def run_steps(model: ModelConfig, params: Any, net0: vsml.NetState, xs: jax.Array,
              ys: jax.Array, n_out: int, live: int | None) -> tuple[Any, ...]:
    """Logits, online losses (masked when ``live``) and the final state of one episode."""
    make = VsmlLearner(model).make
    _, step = (make(params, xs.shape[1], n_out) if live is None
               else make(params, xs.shape[1], n_out, live=jnp.int32(live)))

    def body(net: vsml.NetState, xy: tuple[jax.Array, jax.Array]) -> tuple[Any, Any]:
        net, logits = step(net, *xy)
        live_logits = masked_logits(logits, None if live is None else jnp.int32(live))
        return net, (logits, -jax.nn.log_softmax(live_logits)[xy[1]])

    final, (logits, losses) = jax.jit(lambda n, a, b: jax.lax.scan(body, n, (a, b)))(
        net0, xs, ys)
    return np.asarray(logits), np.asarray(losses), final


@pytest.mark.parametrize("model", [
    ModelConfig(),
    ModelConfig(hidden_layers=(8,), backward_pass=True, feed_label=True, layer_norm=True),
], ids=["single-bwd", "deep-bwd-ln-label"])
def test_ten_class_episode_in_47_wide_network_is_a_10_wide_network(model: ModelConfig) -> None:
    """Same logits, losses and states on the live outputs (and everywhere below them): in
    float64 to float64's rounding, and each float32 run within float32's rounding of its
    float64 run (tests/numerics.py: the bound follows from the episode's length and widths)."""
    n_in, steps = 12, 30
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((steps, n_in)), jnp.float32)
    ys = jnp.asarray(rng.permutation(np.arange(steps) % 10), jnp.int32)
    # Open the input gate so that the states move within 30 steps (as test_oracle does).
    params = vsml.init_params(jax.random.key(1), model)
    params["lstm_b"] = params["lstm_b"].at[: model.state_size].add(3.0)
    init, _ = VsmlLearner(model).make(params, n_in, 47)
    wide0 = init(jax.random.key(2))
    # The 10-wide network starts from the wide one's states of its 10 outputs (fast layout
    # [s, n_out, n_in]: the outputs are axis 1), so any difference comes from the episode.
    last = len(wide0.layers) - 1
    narrow0 = vsml.NetState(
        [vsml.LayerState(*(a[:, :10] for a in ls)) if li == last else ls
         for li, ls in enumerate(wide0.layers)],
        [p[:10] if li == last else p for li, p in enumerate(wide0.pending)])

    def results(wide: bool, dtype: Any) -> list[np.ndarray]:
        """Logits and losses, every layer's h and c, the pending backward message (the wide
        network's on its 10 live outputs)."""
        with jax.enable_x64(dtype == jnp.float64):
            p, x, net0 = numerics.as_dtype((params, xs, wide0 if wide else narrow0), dtype)
            logits, losses, net = run_steps(model, p, net0, x, ys, 47 if wide else 10,
                                            10 if wide else None)
        states = [np.asarray(a)[:, :10] if wide and li == last else np.asarray(a)
                  for li, ls in enumerate(net.layers) for a in ls]
        return [logits[:, :10], losses, *states,
                np.asarray(net.pending[last])[:10]]

    (w32, n32), (w64, n64) = ([results(True, t), results(False, t)]
                              for t in (jnp.float32, jnp.float64))
    assert w64[0].dtype == np.float64 and w32[0].dtype == np.float32
    layers = len(model.hidden_layers) + 1
    updates = numerics.lstm_updates(steps, model.micro_ticks, layers, model.backward_pass)
    ops, scale = numerics.ops_per_update(47), numerics.scale_of(n64)
    names = ["logits", "losses", *(f"{a} of layer {li}" for li in range(layers) for a in "hc"),
             "pending backward message"]
    for name, a32, b32, a64, b64 in zip(names, w32, n32, w64, n64, strict=True):
        numerics.assert_within(a64, b64, numerics.bound(numerics.U64, updates, ops, scale),
                               f"float64 {name}")
        for what, got, want in (("wide", a32, a64), ("narrow", b32, b64)):
            numerics.assert_within(got, want, numerics.bound(numerics.U32, updates, ops, scale),
                                   f"float32 {what} {name}")
    n_logits, n_losses = n32[:2]
    assert np.ptp(n_logits, axis=0).min() > 0.01  # the live outputs do learn
    assert abs(n_losses[0] - math.log(10)) < 0.5  # a 10-way guess, not a 47-way one
    # (test_oracle's masked tests show the unmasked wide network takes another course.)


def synthetic(name: str, classes: int, n: int = 64) -> ArrayDataset:
    rng = np.random.default_rng(classes)
    x = rng.standard_normal((n, 4, 4, 1)).astype(np.float32)
    return ArrayDataset(name, "train", x, (np.arange(n) % classes).astype(np.int32),
                        num_classes=classes, mean=0.0, std=1.0)


def first_losses(learner: Any, task: Any, data: Any, keys: jax.Array) -> np.ndarray:
    params = {"learning_rate": jnp.asarray(0.1)}
    fn = jax.jit(jax.vmap(lambda k: learner_episode(learner, params, k, data, task)[0][0]))
    return np.asarray(fn(keys))


@pytest.mark.parametrize("per_dataset", [True, False])
def test_mixture_episode_uses_its_datasets_class_count(per_dataset: bool) -> None:
    """A mixture of a 10-class and a 47-class dataset: each episode's live count is its
    dataset's, and SGD's first prediction (zero output weights: uniform over the live
    outputs) costs ln 10 or ln 47 accordingly; without per-dataset outputs, ln 47 always."""
    parts, datas = zip(*(make_task(synthetic(n, c), 8, 47, False, transforms=False)
                         for n, c in (("ten", 10), ("many", 47))), strict=True)
    mixture = MixtureTask("mix", tuple(parts), (1.0, 1.0), parts[0].preprocess)
    mixture = with_output_mask(mixture, per_dataset)
    keys = jax.random.split(jax.random.key(0), 16)
    choices = np.asarray([mixture.episode(jax.random.split(k)[0]).choice for k in keys])
    assert 0 < choices.sum() < len(keys)  # both datasets drawn
    for k, choice in zip(keys, choices, strict=True):
        live = mixture.live_outputs(mixture.episode(jax.random.split(k)[0]))
        assert (live is None) == (not per_dataset)
        if per_dataset:
            assert int(live) == (10, 47)[choice]
    losses = first_losses(GradientLearner("sgd"), mixture, tuple(datas), keys)
    want = np.where(choices == 0, math.log(10), math.log(47)) if per_dataset else math.log(47)
    np.testing.assert_allclose(losses, want, rtol=1e-5)


def test_config_switch_reaches_training_and_metatest_tasks() -> None:
    """task.per_dataset_outputs masks digits' 10 classes in a 12-wide network, in the
    meta-training task and in every meta-test task; off, nothing is masked."""
    for on in (True, False):
        cfg = TaskConfig(dataset="digits", num_classes=12, episode_length=5,
                         per_dataset_outputs=on)
        train, data = build_task(cfg)
        test, _ = load_metatest_task("digits:test", cfg, MetaTestConfig(), 5, None)
        for task in (train, test):
            assert task.num_outputs == 12 and task.dataset_classes == 10
            live = task.live_outputs(task.episode(jax.random.key(0)))
            assert (live is not None and int(live) == 10) if on else live is None
        if on:  # and the count reaches the loss: SGD's first guess is uniform over 10
            losses = first_losses(GradientLearner("sgd"), train, data, jax.random.split(
                jax.random.key(0), 2))
            np.testing.assert_allclose(losses, math.log(10), rtol=1e-5)


def test_separate_backward_lstm_needs_backward_pass(capsys) -> None:
    code = main(["train", str(QUICKSTART), "--set", "model.separate_backward_lstm=true",
                 "--set", "model.backward_pass=false"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "model.separate_backward_lstm" in err and "backward_pass" in err
    code = main(["train", str(QUICKSTART), "--set", "model.layer_nrom=true"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Did you mean 'model.layer_norm'" in err


def test_option_parameter_layouts() -> None:
    """Layer-wise sets stack over the layers, the backward set is a second copy under back_,
    LayerNorm adds scale 1 / offset 0; num_params counts them; the default is unchanged."""
    base = ModelConfig()
    full = ModelConfig(hidden_layers=(5, 4), layer_norm=True, layerwise_lstms=True,
                       separate_backward_lstm=True)
    p0, p1 = vsml.init_params(jax.random.key(0), base), vsml.init_params(jax.random.key(0), full)
    assert sum(v.size for v in p0.values()) == vsml.num_params(base) == 2384
    assert sum(v.size for v in p1.values()) == vsml.num_params(full) == 2 * 3 * (2384 + 32)
    assert p1["lstm_w"].shape == p1["back_lstm_w"].shape == (3, 32, 64)
    assert not np.allclose(p1["lstm_w"][0], p1["lstm_w"][1])
    assert not np.allclose(p1["lstm_w"], p1["back_lstm_w"])
    np.testing.assert_array_equal(p1["fwd_ln_scale"], 1.0)
    np.testing.assert_array_equal(p1["back_bwd_ln_offset"], 0.0)
    one = vsml.layer_params(p1, full, 2, backward=True)
    np.testing.assert_array_equal(one["lstm_w"], p1["back_lstm_w"][2])
    assert set(one) == set(vsml.init_params(jax.random.key(0), ModelConfig(layer_norm=True)))
    # The default layout and draws are those of before the options (2384 floats, same keys).
    ln = vsml.init_params(jax.random.key(0), ModelConfig(layer_norm=True))
    np.testing.assert_array_equal(ln["lstm_w"], p0["lstm_w"])


# --------------------------------------------------------------------------------------------
# The other paths that run a learner on a 10-class dataset in a 47-wide network: imitation
# (section 4.1's gradient meta-training), the scikit-learn classifier, and exported files.
# With init_scale 0 the initial "weights" are zero at any width, so a 47-wide network starts
# exactly where a 10-wide one does and whole runs can be compared end to end.

ZERO_INIT = [ModelConfig(init_scale=0.0),
             ModelConfig(init_scale=0.0, hidden_layers=(8,), feed_label=True, layer_norm=True)]


def open_gates(model: ModelConfig) -> dict[str, Any]:
    """Fresh parameters with the input gate opened, so the states move within a few steps."""
    params = vsml.init_params(jax.random.key(1), model)
    params["lstm_b"] = params["lstm_b"].at[: model.state_size].add(3.0)
    return params


def ten_class_tasks(steps: int) -> tuple[Any, Any, Any]:
    """(47-wide masked task, 10-wide task, data) over one 10-class dataset."""
    dataset = synthetic("ten", 10)
    wide, data = make_task(dataset, steps, 47, True, transforms=False)
    narrow, _ = make_task(dataset, steps, 10, True, transforms=False)
    return with_output_mask(wide, True), narrow, data


@pytest.mark.parametrize(("model", "kind"), [(ZERO_INIT[0], "logits"), (ZERO_INIT[0], "kl"),
                                             (ZERO_INIT[1], "kl")],
                         ids=["single-logits", "single-kl", "deep-ln-label-kl"])
def test_imitation_of_a_ten_class_dataset_in_47_wide_network(model: ModelConfig,
                                                             kind: str) -> None:
    """Imitation loss, accuracy and meta-gradient are those of a 10-wide network, for fresh
    episodes and for carried ones (imitation_horizon); unmasked, they are not."""
    wide, narrow, data = ten_class_tasks(12)
    learner = VsmlLearner(model)
    target = imitation_target("sgd_mlp" if model.hidden_layers else "sgd", learner)
    params, lr = open_gates(model), {"learning_rate": jnp.float32(0.5)}
    key = jax.random.key(4)

    def loss_and_grad(task: Any, dtype: Any = jnp.float32) -> tuple[Any, ...]:
        # init_scale 0: the initial states are zeros in any dtype, so float64 runs the same
        # episode as float32 does (the same float32 parameters, widened).
        with jax.enable_x64(dtype == jnp.float64):
            p, rate = numerics.as_dtype((params, lr), dtype)

            def loss(p: Any) -> tuple[jax.Array, jax.Array]:
                return imitation_episode(learner, p, target, rate, key, data, task, kind, 0.5)
            (value, acc), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
            assert value.dtype == dtype
            return float(value), float(acc), {k: np.asarray(v) for k, v in grads.items()}

    def carried(task: Any, dtype: Any = jnp.float32) -> tuple[Any, ...]:
        # Meta learning rate 0: Adam would blow float noise in near-zero gradients up to full
        # steps; the gradients are compared above. What is checked here is the carry.
        with jax.enable_x64(dtype == jnp.float64):
            method = ImitationMethod(Imitation(learner, target, 0.5, 0.0, 2, 24, task, 0,
                                               kind, 0.5), chunk=2)
            state = method.init(numerics.as_dtype(params, dtype))
            losses = []
            for generation in range(2):  # the second update continues the first one's streams
                state, row = method.step(state, generation, LocalEvaluator(None, data))
                losses.append(row["fitness_mean"])
            net = state["episodes"].state
            last = len(net.layers) - 1
            return np.asarray(losses), [np.asarray(a) for a in (*net.layers[last],
                                                                 net.pending[last])]

    runs = {(name, dtype): (loss_and_grad(task, dtype), carried(task, dtype))
            for name, task in (("wide", wide), ("narrow", narrow))
            for dtype in (jnp.float32, jnp.float64)}
    # tests/numerics.py: 24 steps (two updates of 12 carried steps), differentiated (the
    # reverse pass doubles the chain); scale from every float64 result, gradients included.
    layers = len(model.hidden_layers) + 1
    updates = 2 * numerics.lstm_updates(24, model.micro_ticks, layers, model.backward_pass)
    ops = numerics.ops_per_update(47)
    (n_loss, n_acc, n_grads), (n_losses, n_net) = runs["narrow", jnp.float64]
    (n32_loss, _, n32_grads), (n32_losses, n32_net) = runs["narrow", jnp.float32]
    scale = numerics.scale_of([n_loss, *n_grads.values(), n_losses, *n_net, n32_loss,
                               *n32_grads.values(), n32_losses, *n32_net])
    tol = {dtype: numerics.bound(u, updates, ops, scale)
           for dtype, u in ((jnp.float32, numerics.U32), (jnp.float64, numerics.U64))}

    def flat(name: str, dtype: Any) -> list[tuple[str, Any]]:
        (value, _, grads), (losses, net) = runs[name, dtype]
        # The wide network's carried states on its 10 live outputs: [episode, ..., n_out, n_in|m]
        net = [a[..., :10, :] for a in net] if name == "wide" else net
        return [("loss", value), *((f"gradient {k}", grads[k]) for k in sorted(grads)),
                ("carried losses", losses), *(zip(("h", "c", "pending"), net, strict=True))]

    for (what, w64), (_, n64) in zip(flat("wide", jnp.float64), flat("narrow", jnp.float64),
                                     strict=True):
        numerics.assert_within(w64, n64, tol[jnp.float64], f"float64 wide vs narrow {what}")
    if not model.hidden_layers:
        for name in ("wide", "narrow"):
            for (what, a32), (_, a64) in zip(flat(name, jnp.float32), flat(name, jnp.float64),
                                             strict=True):
                numerics.assert_within(a32, a64, tol[jnp.float32], f"float32 {name} {what}")
    else:
        # The MLP target draws its initial weights in the run's dtype (other numbers in float64),
        # so here the float32 runs are held to each other: each is within tol of the exact
        # episode (the one float64 checks wide = narrow for), hence within 2 tol of the other.
        for (what, w32), (_, n32) in zip(flat("wide", jnp.float32), flat("narrow", jnp.float32),
                                         strict=True):
            numerics.assert_within(w32, n32, 2 * tol[jnp.float32], f"float32 wide vs narrow {what}")
    # The same predictions in float64 (exact math; in float32 a prediction may differ only
    # where two logits are within rounding, which the float32 bounds above cover).
    assert runs["wide", jnp.float64][0][1] == n_acc
    padded = loss_and_grad(dataclasses.replace(wide, mask_outputs=False))[0]
    assert abs(padded - runs["narrow", jnp.float32][0][0]) > 1e-3  # dead outputs do matter


def fake_run(run_dir: Path, params: dict[str, Any], model: ModelConfig, width: int,
             per_dataset: bool) -> Path:
    """A run directory holding only params.npz, as a finished run writes it."""
    config = Config(model=model, task=TaskConfig(num_classes=width,
                                                 per_dataset_outputs=per_dataset))
    save_params(run_dir / "params.npz", params, {
        "format": "vsml-es-params", "version": 1, "generation": 3,
        "config": config_to_dict(config), "num_features": 16, "num_outputs": width,
        "example_shape": [4, 4, 1], "input_stats": [{"dataset": "ten", "mean": 0.0, "std": 1.0}]})
    return run_dir


@pytest.mark.parametrize("model", ZERO_INIT, ids=["single", "deep-ln-label"])
def test_exported_classifier_of_47_outputs_learns_ten_classes_as_10_wide(
        model: ModelConfig, tmp_path: Path) -> None:
    """Export keeps task.per_dataset_outputs; the classifier loaded from the file then masks
    the 37 outputs beyond the 10 classes: same predictions (online and after learning) and
    probabilities as a 10-wide learner. Without the flag it learns with 47 live outputs."""
    params = {k: np.asarray(v) for k, v in open_gates(model).items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    y = (np.arange(40) * 7) % 10
    runs = {}
    for name, width, per_dataset in (("wide", 47, True), ("narrow", 10, False),
                                     ("padded", 47, False)):
        run_dir = fake_run(tmp_path / name, params, model, width, per_dataset)
        out, meta = export_run(run_dir)
        assert meta["per_dataset_outputs"] is per_dataset
        assert read_learner_file(out)[1].per_dataset_outputs is per_dataset
        clf = load_learner(out, normalize="none", input_map="exact")
        online = clf.predict_learn(x[:30], y[:30], classes=np.arange(10))
        runs[name] = online, clf.predict_proba(x[30:])
    np.testing.assert_array_equal(runs["wide"][0], runs["narrow"][0])
    np.testing.assert_allclose(runs["wide"][1], runs["narrow"][1], **TOL)
    # Random meta-parameters learn little in 30 steps, yet the dead outputs show clearly.
    same = np.abs(runs["wide"][1] - runs["narrow"][1]).max()
    assert np.abs(runs["padded"][1] - runs["narrow"][1]).max() > max(1e-4, 100 * same)
    assert np.ptp(runs["narrow"][1]) > 1e-3  # the probabilities did move
    # The caller may override the file: mask_outputs=False is the padded learner again.
    clf = load_learner(tmp_path / "wide" / "experiment.vsml", normalize="none",
                       input_map="exact", mask_outputs=False)
    clf.partial_fit(x[:30], y[:30], classes=np.arange(10))
    np.testing.assert_allclose(clf.predict_proba(x[30:]), runs["padded"][1], **TOL)


def test_class_subsets_split_a_dataset_into_episodes_of_their_class_counts(capsys) -> None:
    """task.class_subsets (official invariances.yaml: filter_classes per worker): every episode
    keeps one subset, relabelled in the given order, with that many live outputs."""
    subsets = ((6, 2, 3), (1, 5, 4, 9))
    cfg = TaskConfig(dataset="digits", num_classes=10, episode_length=20,
                     permute_labels=False, per_dataset_outputs=True, class_subsets=subsets)
    task, data = build_task(cfg)
    assert isinstance(task, MixtureTask) and task.weights == (0.5, 0.5)
    assert [p.dataset_classes for p in task.parts] == [3, 4]
    _, full = build_task(TaskConfig(dataset="digits"))
    for subset, part in zip(subsets, data, strict=True):  # exactly the subset's examples
        keep = np.isin(np.asarray(full.y), subset)
        np.testing.assert_array_equal(np.asarray(part.x), np.asarray(full.x)[keep])
        np.testing.assert_array_equal(np.asarray(subset)[np.asarray(part.y)],
                                      np.asarray(full.y)[keep])
    seen = set()
    for i in range(8):
        spec = task.episode(jax.random.key(i))
        k = int(task.live_outputs(spec))
        seen.add(k)
        labels = [int(task.example(data, spec, jnp.int32(t))[1]) for t in range(20)]
        assert k == (3, 4)[int(spec.choice)] and max(labels) < k
    assert seen == {3, 4}
    # Bad subsets fail before any work, with the key named.
    for bad, words in (("[[1, 2], [3]]", "class_subsets[1]"),
                       ("[[1, 12], [3, 4]]", "keeps classes [12]")):
        assert main(["train", str(QUICKSTART), "--set", f"task.class_subsets={bad}"]) == 2
        assert words in " ".join(capsys.readouterr().err.split())
