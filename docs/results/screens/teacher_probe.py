"""The imitated optimizer on its own: online SGD at ``scale / inputs``, constant or decaying as
``lr / sqrt(1 + t / tau)`` (training.imitation_decay_steps), meta-tested like a learner.

    python docs/results/screens/teacher_probe.py OUT_DIR [DATASET ...]

One ``vsml-es evaluate``-style table per dataset (default: the three of screens.md; e.g.
``linear_teacher:test`` for a meta-training-like stream) under OUT_DIR (16 episodes of 2000
steps, the meta-test seed and streams of screens.md). No tuning: these are the candidate targets of
imitation, not baselines (the tuned baselines are in screens.md's first rows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp

from vsml_es.experiment import load_experiment
from vsml_es.learners.gradient import GradientLearner
from vsml_es.metatest import Contender, run_metatest

EXPERIMENT = Path(__file__).resolve().parents[3] / "experiments" / "generalization.yaml"
DATASETS = (("fashion_mnist:test", 64), ("fashion_mnist:test@28x28", 784), ("digits:test", 64))
# (scale, tau): lr = scale / inputs, decaying with tau steps (0: constant)
TARGETS = ((8.0, 0.0), (2.0, 0.0), (8.0, 50.0), (8.0, 200.0), (16.0, 50.0), (8.0, 20.0))


def inputs_of(ref: str) -> int:
    """Input count after the experiment's 8x8 resize, or the ``@HxW`` of the reference."""
    if "@" in ref:
        height, width = ref.split("@")[1].split("x")
        return int(height) * int(width)
    return 64


def main(out: Path, datasets: tuple[tuple[str, int], ...] = DATASETS) -> None:
    config = load_experiment(EXPERIMENT, [
        "metatest.baselines=[]", "metatest.report_steps=[25,50,100,200,500,1000,2000]"])
    for ref, inputs in datasets:
        contenders = [
            Contender(f"SGD {scale:g}/n" + (f" decay {tau:g}" if tau else ""),
                      GradientLearner("sgd", decay_steps=tau),
                      {"learning_rate": jnp.float32(scale / inputs)})
            for scale, tau in TARGETS]
        run_metatest(contenders, config, out / ref.replace(":", "_").replace("@", "_"),
                     datasets=(ref,), steps=2000, episodes=16)


if __name__ == "__main__":
    refs = sys.argv[2:]
    main(Path(sys.argv[1]), tuple((ref, inputs_of(ref)) for ref in refs) if refs else DATASETS)
