"""The Meta-RNN baseline learns within an episode once ES has meta-trained it."""

from __future__ import annotations

from test_learners import clusters  # tests/ is on sys.path under pytest

from vsml_es.config import load_config
from vsml_es.evaluator import EvalSpec
from vsml_es.learners import build_learner
from vsml_es.metatest import Contender, learner_curves
from vsml_es.tasks import make_task
from vsml_es.trainer import Trainer


def test_meta_rnn_learns_after_meta_training_through_the_trainer(tmp_path) -> None:
    # An LSTM learns only in its activations, so it needs meta-training first: ES through the
    # ordinary Trainer. Easy task: the majority class (85%) is hidden by the label permutation
    # and must be inferred from the labels seen so far.
    task, data = make_task(clusters(2, minority=0.15), 20, 2, permute_labels=True)
    config = load_config(None, [
        "model.learner=meta_rnn", "model.baseline_hidden=16", "task.num_classes=2",
        "training.population_size=64", "training.generations=40", "training.sigma=0.1",
        "training.learning_rate=0.05", "training.fitness_shaping=centered_rank",
        "training.eval_chunk=64", "logging.progress=false",
    ])
    learner = build_learner("meta_rnn", config)
    spec = EvalSpec(learner, task, "mean_loss", 0, 64)
    trainer = Trainer(config, tmp_path, spec=spec, data=data)
    state = trainer.run(progress=False)
    curves = learner_curves(Contender("Meta-RNN", learner, trainer.mean_params(state)), task,
                            data, 64, seed=99)
    first_steps = curves.accuracy[:, :3].mean()
    last = curves.accuracy[:, -7:].mean()
    assert last > 0.7 and last > first_steps + 0.1, (first_steps, last)
