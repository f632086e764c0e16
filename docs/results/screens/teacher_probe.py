"""The imitated optimizer on its own: online SGD at ``scale / inputs``, constant or decaying as
``lr / sqrt(1 + t / tau)`` (training.imitation_decay_steps), meta-tested like a learner.

    python docs/results/screens/teacher_probe.py OUT_DIR [DATASET ...]

One ``vsml-es evaluate``-style table per dataset (default: the three of screens.md; e.g.
``linear_teacher:test`` for a meta-training-like stream) under OUT_DIR (16 episodes of 2000
steps, the meta-test seed and streams of screens.md). No tuning: these are the candidate targets of
imitation, not baselines (the tuned baselines are in screens.md's first rows).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax.numpy as jnp

from vsml_es.experiment import load_experiment
from vsml_es.learners.gradient import GradientLearner
from vsml_es.metatest import Contender, run_metatest
from vsml_es.tasks import split_size

EXPERIMENT = Path(__file__).resolve().parents[3] / "experiments" / "generalization.yaml"
DATASETS = ("fashion_mnist:test", "fashion_mnist:test@28x28", "digits:test")
# (scale, tau): lr = scale / inputs, decaying with tau steps (0: constant)
TARGETS = ((8.0, 0.0), (2.0, 0.0), (8.0, 50.0), (8.0, 200.0), (16.0, 50.0), (8.0, 20.0))


def main(out: Path, datasets: tuple[str, ...] = DATASETS) -> None:
    config = load_experiment(EXPERIMENT, [
        "metatest.baselines=[]", "metatest.report_steps=[25,50,100,200,500,1000,2000]"])
    for ref in datasets:
        # Inputs after preprocessing: the ref's own '@HxW' size, else the meta-test's resize.
        inputs = math.prod(split_size(ref)[1] or config.metatest.preprocess.resize)
        contenders = [
            Contender(f"SGD {scale:g}/n" + (f" decay {tau:g}" if tau else ""),
                      GradientLearner("sgd", decay_steps=tau),
                      {"learning_rate": jnp.float32(scale / inputs)})
            for scale, tau in TARGETS]
        run_metatest(contenders, config, out / ref.replace(":", "_").replace("@", "_"),
                     datasets=(ref,), steps=2000, episodes=16)


if __name__ == "__main__":
    main(Path(sys.argv[1]), tuple(sys.argv[2:]) or DATASETS)
