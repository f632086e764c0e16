"""The official few-shot baseline network (models.SGD with use_conv, sgd_omniglot.yaml) as a
meta-test baseline: its network checked against a convolution written out in NumPy, its
online learning on real handwritten digits, and its bad settings refused before any work."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import refused_before_work

from vsml_es.errors import LearnerError
from vsml_es.experiment import load_experiment
from vsml_es.learners import build_learner, get_entry
from vsml_es.learners.conv_gradient import conv_net_logits, init_conv_net
from vsml_es.metatest import run_metatest

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def reference_logits(params, image: np.ndarray) -> np.ndarray:
    """Three 3x3 stride-2 SAME convolutions with tanh (TensorFlow's SAME: the extra padding
    row/column goes after), a linear read-out, logits bounded by 100 * tanh(. / 100)."""
    convs, (w_out, b_out) = params
    z = image.astype(np.float64)
    for kernel, bias in convs:
        kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
        h, w, _ = z.shape
        out_h, out_w = math.ceil(h / 2), math.ceil(w / 2)
        pad_h, pad_w = max((out_h - 1) * 2 + 3 - h, 0), max((out_w - 1) * 2 + 3 - w, 0)
        padded = np.pad(z, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                            (0, 0)))
        out = np.zeros((out_h, out_w, kernel.shape[3]))
        for i in range(out_h):
            for j in range(out_w):
                patch = padded[2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
                out[i, j] = np.einsum("abc,abcd->d", patch, kernel) + bias
        z = np.tanh(out)
    logits = z.reshape(-1) @ np.asarray(w_out, np.float64) + np.asarray(b_out, np.float64)
    return 100 * np.tanh(logits / 100)


def test_network_is_the_official_three_conv_net() -> None:
    params = init_conv_net(jax.random.key(0), (28, 28, 1), 5)
    convs, (w_out, _) = params
    assert [k.shape for k, _ in convs] == [(3, 3, 1, 8), (3, 3, 8, 8), (3, 3, 8, 8)]
    assert w_out.shape == (4 * 4 * 8, 5)  # 28 -> 14 -> 7 -> 4
    for kernel, _ in convs:  # Haiku's default: truncated at 2 std of 1/sqrt(fan_in)
        fan_in = math.prod(kernel.shape[:3])
        assert 1.5 < float(np.abs(kernel).max()) * math.sqrt(fan_in) <= 2.0
    logits = jax.jit(conv_net_logits, static_argnums=2)
    image = np.asarray(jax.random.normal(jax.random.key(1), (28, 28, 1)))
    got = np.asarray(logits(params, image.reshape(-1), (28, 28, 1)))
    np.testing.assert_allclose(got, reference_logits(params, image), rtol=1e-5, atol=1e-5)
    odd = init_conv_net(jax.random.key(2), (9, 7, 3), 4)  # odd sides, several channels
    image = np.asarray(jax.random.normal(jax.random.key(3), (9, 7, 3)))
    np.testing.assert_allclose(np.asarray(logits(odd, image.reshape(-1), (9, 7, 3))),
                               reference_logits(odd, image), rtol=1e-5, atol=1e-5)


def test_adam_conv_learns_digits_online_as_a_metatest_baseline(tmp_path: Path) -> None:
    """From config through the meta-test: tuned on digits' training streams, scored on held-out
    digits (scikit-learn's 8x8 images, labels fixed) beside nothing else."""
    config = load_experiment(QUICKSTART, ["metatest.baselines=[adam_conv]",
                                          "metatest.adam_learning_rates=[0.01]",
                                          "metatest.sgd_tuning_episodes=1",
                                          "metatest.datasets=[digits:test]",
                                          "task.permute_labels=false"])
    (row,) = run_metatest([], config, tmp_path, steps=300, episodes=4, log=lambda _: None)
    assert row["method"] == "Adam 3-conv (lr 0.01)"
    assert row["acc_last_quarter"] > 0.5  # 10 classes: chance is 0.1
    assert row["acc_last_quarter"] > row["acc_first_quarter"] + 0.2


def test_flat_examples_are_refused() -> None:
    learner = build_learner("adam_conv", load_experiment(QUICKSTART))
    (params,) = get_entry("adam_conv").candidates(load_experiment(
        QUICKSTART, ["metatest.adam_learning_rates=[0.001]"]))
    with pytest.raises(LearnerError, match="HEIGHT x WIDTH x CHANNELS"):
        learner.make(params, 40, 10, input_shape=(40,))


@pytest.mark.parametrize(("overrides", "words"), [
    (["metatest.baselines=[adam_conv]", "task.dataset=mnist1d",
      "metatest.datasets=[mnist1d:test]"],
     "metatest.baselines (adam_conv) needs image-shaped data"),
    (["metatest.baselines=[sgd, sgd_conv]", "metatest.preprocess.resize=[]",
      "metatest.datasets=[mnist1d:test]"],
     "metatest.baselines (sgd_conv) needs image-shaped data"),
    (["metatest.baselines=[adam_cnn]"], "adam_conv"),  # a typo lists the valid names
])
def test_bad_conv_baseline_settings_exit_2(overrides: list[str], words: str, capsys,
                                           tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    refused_before_work(["train", str(QUICKSTART), "--run-dir", str(run_dir)], run_dir,
                        overrides, words, capsys)
