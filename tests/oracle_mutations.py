"""Mutation check of tests/test_oracle.py: does each plausible mistake in the fast path fail it?

Run ``python tests/oracle_mutations.py [-k EXPR] [ID ...]`` from the repository root (``-k``
selects tests as pytest's -k does, e.g. ``-k conv`` for mutations of conv-only code). It copies the
working tree (without .git) to a temporary directory, applies one mutation at a time there,
runs ``python -m pytest -q tests/test_oracle.py`` on the copy, and prints the markdown table
of docs/results/oracle_mutations.md (which tests failed, i.e. caught the mutation). The
checkout itself is never modified. A mutation whose text no longer occurs is reported, not
applied: update its strings when the code it targets changes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# (id, what, file, old text, new text): one mistake each, in the code the learner runs.
V = "vsml_es/vsml.py"
C = "vsml_es/config.py"
E = "vsml_es/episodes.py"
MUTATIONS = [
    # --- the list
    ("error-sign", "error sign flipped: onehot - softmax", V,
     "error = masked_softmax(logits, mask) - onehot",
     "error = onehot - masked_softmax(logits, mask)"),
    ("forget-offset", "forget-gate offset 5 -> 4", V, "FORGET_OFFSET = 5.0", "FORGET_OFFSET = 4.0"),
    ("input-offset", "input-gate offset -5 -> -4", V, "INPUT_OFFSET = -5.0", "INPUT_OFFSET = -4.0"),
    ("readout-slot", "prediction read from message slot 0 instead of 1", V,
     "PREDICTION_SLOT = 1", "PREDICTION_SLOT = 0"),
    ("fwd-sum", "forward messages summed over inputs instead of averaged", V,
     "jnp.mean(h, axis=2).T", "jnp.sum(h, axis=2).T"),
    ("bwd-sum", "backward messages summed over outputs instead of averaged", V,
     "jnp.mean(h, axis=1).T", "jnp.sum(h, axis=1).T"),
    ("bound-50", "output bound default 100 -> 50", C,
     "output_bound: float = 100.0", "output_bound: float = 50.0"),
    ("label-slot", "label fed in slot 2 instead of 1", V,
     "msg = msg.at[:, 1].set(label_onehot)", "msg = msg.at[:, 2].set(label_onehot)"),
    ("bwd-skip-first", "backward pass skips the first layer", V,
     "for li in reversed(range(num_layers)):", "for li in reversed(range(1, num_layers)):"),
    ("bwd-skip-last", "backward pass skips the last layer (starts below it)", V,
     "        bwd = err_msg\n        for li in reversed(range(num_layers)):",
     "        bwd = err_msg\n        for li in reversed(range(num_layers - 1)):"),
    ("init-scale", "initial-state scale default 1.0 -> 1.1", C,
     "init_scale: float = 1.0", "init_scale: float = 1.1"),
    ("init-fan", "initial-state std 1/sqrt(n_out) instead of 1/sqrt(n_in)", V,
     "(model.init_scale / jnp.sqrt(n_in))", "(model.init_scale / jnp.sqrt(n_out))"),
    # --- gates
    ("gate-candidate", "gates: cell candidate tanh(1.01 g)", V,
     "_sigmoid(i + INPUT_OFFSET) * jnp.tanh(g)", "_sigmoid(i + INPUT_OFFSET) * jnp.tanh(1.01 * g)"),
    ("gate-output", "gates: output gate sigmoid(o + 0.01)", V,
     "return _sigmoid(o) * jnp.tanh(c), c", "return _sigmoid(o + 0.01) * jnp.tanh(c), c"),
    ("gate-order", "gates: i and f row blocks swapped", V,
     "i, g, f, o = z[:s], z[s : 2 * s], z[2 * s : 3 * s], z[3 * s :]",
     "f, g, i, o = z[:s], z[s : 2 * s], z[2 * s : 3 * s], z[3 * s :]"),
    ("gate-sigmoid", "gates: sigmoid as 0.5 tanh(x/2) + 0.501", V,
     "return 0.5 * jnp.tanh(0.5 * x) + 0.5", "return 0.5 * jnp.tanh(0.5 * x) + 0.501"),
    ("gate-recurrent", "gates: recurrent term reads c instead of h", V,
     'z = (jnp.einsum("ks,sba->kba", w_ht, h, precision=PRECISION)',
     'z = (jnp.einsum("ks,sba->kba", w_ht, c, precision=PRECISION)'),
    ("gate-bias", "gates: LSTM bias dropped", V,
     'precision=PRECISION) + params["lstm_b"][:, None]', 'precision=PRECISION)'),
    ("micro-ticks", "micro ticks fixed at 2 whatever the config", V,
     "jax.lax.fori_loop(0, ticks, tick, tuple(state))",
     "jax.lax.fori_loop(0, 2, tick, tuple(state))"),
    # --- messages
    ("msg-fwd-bias", "messages: forward bias added twice", V,
     'precision=PRECISION) + params["fwd_b"]', 'precision=PRECISION) + 2 * params["fwd_b"]'),
    ("msg-bwd-bias", "messages: backward bias dropped", V,
     'precision=PRECISION) + params["bwd_b"]', 'precision=PRECISION)'),
    ("msg-bwd-proj", "messages: backward message projected with fwd_w", V,
     'jnp.matmul(h_from_a, params["bwd_w"]', 'jnp.matmul(h_from_a, params["fwd_w"]'),
    ("msg-rows", "messages: backward message read through the forward rows of lstm_w", V,
     "w_f, w_g, w_h = w[:m], w[m : 2 * m], w[2 * m :]", "w_f, w_g, w_h = w[:m], w[:m], w[2 * m :]"),
    ("msg-input-slot", "messages: input in slot 1 instead of 0", V,
     "jnp.zeros((x.shape[0], message_size)).at[:, 0].set(x)",
     "jnp.zeros((x.shape[0], message_size)).at[:, 1].set(x)"),
    ("msg-error-slot", "messages: error in slot 2 instead of 0", V,
     "msg = jnp.zeros((error.shape[0], message_size)).at[:, 0].set(error)",
     "msg = jnp.zeros((error.shape[0], message_size)).at[:, 2].set(error)"),
    ("msg-hidden-fwd",
     "routing: a hidden layer gets zeros instead of the backward message of the layer above "
     "(no backward pass)", V,
     "            pending[li - 1] = bwd_out  # with", "            pass  # with"),
    ("msg-hidden-bwd-zero",
     "routing: with the backward pass, a hidden layer's forward tick gets zeros instead of the "
     "previous backward pass's message (the behaviour before issue 13 item 4)", V,
     "                pending[li - 1] = bwd  # read by", "                pass  # read by"),
    ("error-late", "error of the previous example never delivered (no backward pass)", V,
     "        pending[-1] = err_msg  # arrives", "        pass  # arrives"),
    ("error-scale", "error softmax - onehot scaled by 1.01", V,
     "error = masked_softmax(logits, mask) - onehot",
     "error = 1.01 * (masked_softmax(logits, mask) - onehot)"),
    ("label-always", "label fed even with feed_label off", V,
     "    if feed_label:\n", "    if True:\n"),
    # --- read-out and bounding
    ("readout-scale", "read-out: logits 1.001 x message", V,
     "bound_logits(fwd[:, PREDICTION_SLOT], model.output_bound)",
     "bound_logits(1.001 * fwd[:, PREDICTION_SLOT], model.output_bound)"),
    ("bound-none", "bounding removed (raw logits)", V,
     "return bound * jnp.tanh(raw / bound)", "return raw"),
    ("bound-formula", "bounding: 2b tanh(z / 2b)", V,
     "return bound * jnp.tanh(raw / bound)", "return 2 * bound * jnp.tanh(raw / (2 * bound))"),
    ("loss-index", "online loss of class 0 instead of the label", E,
     "loss = -jax.nn.log_softmax(logits)[y]", "loss = -jax.nn.log_softmax(logits)[0]"),
    # --- backward pass
    ("bwd-fwd-input", "backward pass sees zero forward messages", V,
     "run(li, True, fwd_inputs[li], bwd)", "run(li, True, jnp.zeros_like(fwd_inputs[li]), bwd)"),
    ("bwd-one-tick", "backward pass runs one micro tick", V,
     "return layer_fn(own, layers[li], fwd_in, bwd_in, ticks)\n",
     "return layer_fn(own, layers[li], fwd_in, bwd_in, 1 if backward else ticks)\n"),
    ("bwd-no-label", "backward pass gets the error without the label", V,
     "        bwd = err_msg\n", "        bwd = error_messages(error, onehot, m, False)\n"),
    ("bwd-state-dropped", "backward pass state updates of the first layer dropped", V,
     "            layers[li], _, bwd = run(li, True, fwd_inputs[li], bwd)",
     "            new_state, _, bwd = run(li, True, fwd_inputs[li], bwd)\n"
     "            layers[li] = layers[li] if li == 0 else new_state"),
    # --- initial states
    ("init-h", "initial h = 0.01 instead of 0", V,
     "states.append(LayerState(h=jnp.zeros((n_in, n_out, s)), c=c))",
     "states.append(LayerState(h=jnp.full((n_in, n_out, s), 0.01), c=c))"),
    ("init-half", "random half of c in the last dimensions instead of the first", V,
     "c = jnp.concatenate([weights, jnp.zeros((n_in, n_out, s - s // 2))], axis=-1)",
     "c = jnp.concatenate([jnp.zeros((n_in, n_out, s - s // 2)), weights], axis=-1)"),
    ("init-trunc", "truncation at +-3 instead of +-2", V,
     "weights = jax.random.truncated_normal(k, -2.0, 2.0, (n_in, n_out, s // 2))",
     "weights = jax.random.truncated_normal(k, -3.0, 3.0, (n_in, n_out, s // 2))"),
    ("init-same", "same random weights every episode", V,
     "for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes)), sizes, strict=True):",
     "for k, (n_in, n_out) in zip(jax.random.split(jax.random.key(0), len(sizes)), sizes,"
     " strict=True):"),
    # --- message LayerNorm (model.layer_norm)
    ("ln-eps", "LayerNorm epsilon 1e-5 -> 1e-3", V,
     "LAYER_NORM_EPS = 1e-5", "LAYER_NORM_EPS = 1e-3"),
    ("ln-offset", "LayerNorm offset dropped", V,
     "(scale * jax.lax.rsqrt(var + LAYER_NORM_EPS)) + offset",
     "(scale * jax.lax.rsqrt(var + LAYER_NORM_EPS))"),
    ("ln-uncentred", "LayerNorm variance of x instead of x - mean", V,
     "var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)",
     "var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)"),
    ("ln-swap", "backward message normalized with the forward LayerNorm's scale", V,
     'bwd_ab = layer_norm(bwd_ab, params["bwd_ln_scale"]',
     'bwd_ab = layer_norm(bwd_ab, params["fwd_ln_scale"]'),
    ("ln-after-mean", "LayerNorm on the averaged message instead of each connection's", V,
     '    fwd_ab = layer_norm(fwd_ab, params["fwd_ln_scale"], params["fwd_ln_offset"])\n',
     '    fwd_ab = layer_norm(jnp.mean(fwd_ab, axis=1, keepdims=True), params["fwd_ln_scale"],'
     ' params["fwd_ln_offset"]) + 0 * fwd_ab\n'),
    # --- layer-wise LSTMs (model.layerwise_lstms)
    ("layerwise-first", "every layer runs layer 0's LSTM", V,
     "own = {name: value[layer] for name, value in own.items()}",
     "own = {name: value[0] for name, value in own.items()}"),
    ("layerwise-reversed", "layers run their LSTMs in reverse order", V,
     "own = {name: value[layer] for name, value in own.items()}",
     "own = {name: value[-1 - layer] for name, value in own.items()}"),
    # --- separate backward LSTM (model.separate_backward_lstm)
    ("separate-unused", "backward pass runs the forward LSTM", V,
     'prefix = BACKWARD_PREFIX if backward and model.separate_backward_lstm else ""',
     'prefix = ""'),
    ("separate-everywhere", "forward pass runs the backward LSTM too", V,
     'prefix = BACKWARD_PREFIX if backward and model.separate_backward_lstm else ""',
     'prefix = BACKWARD_PREFIX if model.separate_backward_lstm else ""'),
    # --- per-dataset outputs (task.per_dataset_outputs)
    ("mask-softmax", "dead outputs kept in the error's softmax", V,
     "    if mask is None:\n        return jax.nn.softmax(logits)\n",
     "    if True:\n        return jax.nn.softmax(logits)\n"),
    ("mask-bwd-mean", "backward message averaged over all outputs, dead ones too", V,
     "    if out_mask is not None:  # mean over the live outputs b only",
     "    if False:  # mean over the live outputs b only"),
    ("mask-bwd-sum", "backward message summed over the live outputs", V,
     'jnp.einsum("sba,b->as", h, out_mask, precision=PRECISION) / out_mask.sum()',
     'jnp.einsum("sba,b->as", h, out_mask, precision=PRECISION)'),
    ("mask-bwd-mean-ln", "with LayerNorm, backward message averaged over all outputs", V,
     "    if out_mask is None:\n        return jnp.mean(fwd_ab, axis=1)",
     "    if True:\n        return jnp.mean(fwd_ab, axis=1)"),
    ("mask-off-by-one", "one dead output counted as live", V,
     "(jnp.arange(num_outputs) < live)", "(jnp.arange(num_outputs) <= live)"),
    ("mask-loss", "online loss and argmax over all outputs, dead ones too", E,
     "    if live is None:\n        return logits\n", "    if True:\n        return logits\n"),
    # --- conv VSML layers (model.conv_layers; only conv tests run this code)
    ("conv-kernel-flip", "conv: forward reads the mirrored kernel position", V,
     "            x = p * stride + j - kernel // 2\n",
     "            x = p * stride + (kernel - 1 - j) - kernel // 2\n"),
    ("conv-pad-shift", "conv: forward padding off by one (reads one position further)", V,
     "            x = p * stride + j - kernel // 2\n",
     "            x = p * stride + j - kernel // 2 + 1\n"),
    ("conv-stride-fwd", "conv: forward steps by stride + 1 between output positions", V,
     "            x = p * stride + j - kernel // 2\n",
     "            x = p * (stride + 1) + j - kernel // 2\n"),
    ("conv-out-floor", "conv: output size floor(size / stride) instead of ceil", V,
     "out_h, out_w = -(-h // conv.stride), -(-w // conv.stride)",
     "out_h, out_w = h // conv.stride, w // conv.stride"),
    ("conv-image-transposed", "conv: input image read transposed (width x height)", V,
     'from_fwd = jnp.einsum("pja,qlb,abif->pqjlif", fwd_h, fwd_w, x_f,',
     'from_fwd = jnp.einsum("pja,qlb,abif->pqjlif", fwd_h, fwd_w, jnp.swapaxes(x_f, 0, 1),'),
    ("conv-flatten-order", "conv: output flattened channel-major instead of row-major", V,
     "return LayerState(h, c), fwd.reshape(g.n_out, m), bwd.reshape(g.n_in, m)",
     "return LayerState(h, c), jnp.moveaxis(fwd, 2, 0).reshape(g.n_out, m), "
     "bwd.reshape(g.n_in, m)"),
    ("conv-state-sum", "conv: new state summed over positions instead of averaged", V,
     "h, c = jnp.mean(h_p, axis=(0, 1)), jnp.mean(c_p, axis=(0, 1))",
     "h, c = jnp.sum(h_p, axis=(0, 1)), jnp.sum(c_p, axis=(0, 1))"),
    ("conv-state-first", "conv: new state from the first output position only", V,
     "h, c = jnp.mean(h_p, axis=(0, 1)), jnp.mean(c_p, axis=(0, 1))",
     "h, c = h_p[0, 0], c_p[0, 0]"),
    ("conv-fwd-sum", "conv: forward messages summed over kernel and in channels", V,
     'fwd = params["fwd_b"] + jnp.matmul(jnp.mean(h_p, axis=(2, 3, 4)),',
     'fwd = params["fwd_b"] + jnp.matmul(jnp.sum(h_p, axis=(2, 3, 4)),'),
    ("conv-bwd-axis", "conv: backward message averaged over in channels, not out channels", V,
     'gb = params["bwd_b"] + jnp.matmul(jnp.mean(h_p, axis=5),',
     'gb = params["bwd_b"] + jnp.matmul(jnp.mean(h_p, axis=4),'),
    ("conv-bwd-nodiv", "conv: backward messages summed over kernel slots (no / k*k)", V,
     'precision=PRECISION) / (k * k)', 'precision=PRECISION)'),
    ("conv-bwd-noflip", "conv: backward routing reads kernel slot j, not kernel - 1 - j", V,
     "route[x, min(idx0, size - 1) // stride, kernel - 1 - j] += 1.0",
     "route[x, min(idx0, size - 1) // stride, j] += 1.0"),
    ("conv-bwd-mask-fixed", "conv: official routing without its stride mask quirk", V,
     "if 0 <= idx0 < size // stride and idx0 % stride == 0:",
     "if 0 <= idx0 and idx0 // stride < n_out and idx0 % stride == 0:"),
    ("conv-bwd-offset", "conv: official routing with offset kernel // 2 instead of 1", V,
     "            idx0 = x + j - 1\n", "            idx0 = x + j - kernel // 2\n"),
    ("conv-full-as-official", "conv: full routing computed as the official one", V,
     '    if mode != "official":\n', '    if False:\n'),
    ("conv-bwd-input-pos0", "conv: every position gets output position 0's backward message",
     V, "from_bwd[:, :, None, None, None, :, :])",
     "from_bwd[:1, :1, None, None, None, :, :])"),
    ("conv-ln-after-mean", "conv: LayerNorm on the averaged forward message", V,
     'fwd = jnp.mean(layer_norm(fwd_conn, params["fwd_ln_scale"], params["fwd_ln_offset"]),\n'
     "                       axis=(2, 3, 4))",
     'fwd = layer_norm(jnp.mean(fwd_conn, axis=(2, 3, 4)), params["fwd_ln_scale"],\n'
     '                       params["fwd_ln_offset"])'),
    ("conv-init-fan", "conv: initial cell std 1/sqrt(k*k*in_c) (fan-in) instead of 1/sqrt(k)", V,
     "weights = weights * (model.init_scale / jnp.sqrt(g.kernel))",
     "weights = weights * (model.init_scale / jnp.sqrt(g.kernel * g.kernel * g.in_c))"),
    ("conv-layerwise-count", "layer-wise LSTMs: conv layers not counted", V,
     "return len(model.conv_layers) + len(model.hidden_layers) + 1",
     "return len(model.hidden_layers) + 1"),
    ("conv-ticks-one", "conv: one micro tick whatever the config", V,
     "    for _ in range(ticks):  # micro ticks", "    for _ in range(1):  # micro ticks"),
]


def short(test: str) -> str:
    """test_full_episode_matches_oracle[deep-bwd-label] -> episode[deep-bwd-label]."""
    return (test.replace("test_full_episode_matches_oracle", "episode")
            .replace("test_bounded_logits_match_oracle", "bounded_logits")
            .replace("test_initial_states_follow_official_init", "initial_states")
            .replace("test_option_episode_matches_oracle", "options")
            .replace("test_masked_outputs_match_oracle_of_dataset_width", "masked")
            .replace("test_conv_episode_matches_oracle", "conv")
            .replace("test_conv_initial_states_follow_official_init", "conv_initial_states")
            .replace("test_conv_layerwise_params_have_one_set_per_layer",
                     "conv_layerwise_params"))


def run(root: Path, ids: set[str], select: str = "") -> list[tuple[str, str, str]]:
    """(id, what, tests that failed) per mutation, each applied alone to a copy of ``root``."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="vsml-mut-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".git", "runs", "__pycache__"))
        for mid, what, path, old, new in MUTATIONS:
            if ids and mid not in ids:
                continue
            original = (root / path).read_text()
            if original.count(old) != 1:
                rows.append((mid, what, "NOT APPLIED (text not found once)"))
                continue
            (copy / path).write_text(original.replace(old, new))
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no",
                 "-rf", "tests/test_oracle.py", *(["-k", select] if select else [])],
                cwd=copy, capture_output=True, text=True)
            (copy / path).write_text(original)
            failed = re.findall(r"FAILED tests/test_oracle.py::(\S+)", out.stdout)
            caught = ", ".join(short(t) for t in failed) or f"SURVIVED (pytest rc {out.returncode})"
            rows.append((mid, what, caught))
            print(f"{mid}: {caught}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    args = sys.argv[1:]
    select = ""
    if "-k" in args:
        at = args.index("-k")
        select = args[at + 1]
        args = args[:at] + args[at + 2:]
    rows = run(Path(__file__).resolve().parents[1], set(args), select)
    print("| id | mutation | caught by (failing tests) |\n|---|---|---|")
    for mid, what, caught in rows:
        print(f"| {mid} | {what} | {caught} |")


if __name__ == "__main__":
    main()
