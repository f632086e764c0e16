"""Meta-testing: learning curves of meta-learned learners beside tuned gradient baselines.

All methods see identical streams. Evaluation episodes use their own fixed seed
(``metatest.seed``), never the training seed, and each baseline's learning rate is chosen on
meta-training streams only (with a seed offset of their own), so nothing is tuned on the test.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.baselines.sgd import GRADIENT_BASELINES, GradientBaseline, baseline_learner
from vsml_es.config import Config, MetaTestConfig, ModelConfig
from vsml_es.episodes import episode_keys, learner_episode, online_episode
from vsml_es.tasks import Task, TaskData, load_task

EVAL_BATCH = 16  # episodes per jitted call; bounds memory for large meta-tests
TUNING_SEED_OFFSET = 7919  # tuning streams never coincide with evaluation streams
WINDOW = 0.1  # "accuracy at step s" averages inner steps within +-10% of s (noise of 0/1 hits)


@dataclass
class Curves:
    method: str
    dataset: str
    losses: np.ndarray  # [episodes, steps]
    accuracy: np.ndarray  # [episodes, steps] 0/1 per prediction

    def at_step(self, step: int) -> np.ndarray:
        """Per-episode accuracy around inner step ``step`` (1-based), window +-WINDOW*step."""
        lo = max(1, int(round(step * (1 - WINDOW))))
        hi = min(self.accuracy.shape[1], int(round(step * (1 + WINDOW))))
        return self.accuracy[:, lo - 1 : hi].mean(axis=1)

    def summary(self, report_steps: tuple[int, ...] = ()) -> dict[str, Any]:
        steps = self.accuracy.shape[1]
        quarter = max(1, steps // 4)
        first = self.accuracy[:, :quarter].mean(axis=1)
        last = self.accuracy[:, -quarter:].mean(axis=1)
        loss = self.losses.mean(axis=1)
        row: dict[str, Any] = {
            "method": self.method,
            "dataset": self.dataset,
            "episodes": int(self.accuracy.shape[0]),
            "steps": int(steps),
            "acc_first_quarter": float(first.mean()),
            "acc_first_quarter_ci95": ci95(first),
            "acc_last_quarter": float(last.mean()),
            "acc_last_quarter_ci95": ci95(last),
            "mean_loss": float(loss.mean()),
            "mean_loss_ci95": ci95(loss),
        }
        for step in report_steps:
            if step <= steps:
                values = self.at_step(step)
                row[f"acc@{step}"] = float(values.mean())
                row[f"acc@{step}_ci95"] = ci95(values)
        return row


@dataclass(frozen=True)
class MetaLearned:
    """A meta-learned learner to meta-test: its parameters and the model config that runs them."""

    label: str
    params: Any
    model: ModelConfig


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal-approximation 95% CI of the mean over episodes."""
    n = values.shape[0]
    return float(1.96 * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


@partial(jax.jit, static_argnames=("task", "model"))
def _learner_batch(params, keys, data, task: Task, model: ModelConfig):
    return jax.vmap(learner_episode, in_axes=(None, 0, None, None, None))(
        params, keys, data, task, model
    )


@partial(jax.jit, static_argnames=("task", "baseline", "mlp_hidden"))
def _baseline_batch(learning_rate, keys, data, task: Task, baseline: GradientBaseline,
                    mlp_hidden: int):
    init, step = baseline_learner(baseline, learning_rate, task.num_features, task.num_outputs,
                                  mlp_hidden)
    return jax.vmap(lambda k: online_episode(init, step, k, data, task))(keys)


def _batched(fn, keys: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    losses, accs = [], []
    for start in range(0, keys.shape[0], EVAL_BATCH):
        l, a = fn(keys[start : start + EVAL_BATCH])
        losses.append(np.asarray(l))
        accs.append(np.asarray(a))
    return np.concatenate(losses), np.concatenate(accs)


def eval_keys(seed: int, episodes: int) -> jax.Array:
    return episode_keys(jnp.int32(seed), jnp.int32(0), jnp.arange(episodes, dtype=jnp.int32))


def learner_curves(
    params: Any, model: ModelConfig, task: Task, data: TaskData, episodes: int, seed: int,
    method: str | None = None,
) -> Curves:
    """Curves of the meta-learned learner ``model.learner`` with ``params``."""
    from vsml_es.learners import get_learner

    params = jax.tree.map(jnp.asarray, params)
    losses, accs = _batched(lambda k: _learner_batch(params, k, data, task, model),
                            eval_keys(seed, episodes))
    return Curves(method or get_learner(model.learner).label, task.name, losses, accs)


def baseline_curves(
    name: str, learning_rate: float, task: Task, data: TaskData, episodes: int, seed: int,
    mlp_hidden: int = 160,
) -> Curves:
    baseline = GRADIENT_BASELINES[name]
    losses, accs = _batched(
        lambda k: _baseline_batch(jnp.float32(learning_rate), k, data, task, baseline,
                                  mlp_hidden),
        eval_keys(seed, episodes),
    )
    label = baseline.label + (f"-{mlp_hidden}" if baseline.hidden else "")
    return Curves(f"{label} (lr {learning_rate:g})", task.name, losses, accs)


def learning_rate_grid(name: str, mt: MetaTestConfig) -> tuple[float, ...]:
    optimizer = GRADIENT_BASELINES[name].optimizer
    return mt.sgd_learning_rates if optimizer == "sgd" else mt.adam_learning_rates


def tune_baseline(
    name: str, learning_rates: tuple[float, ...], task: Task, data: TaskData, episodes: int,
    seed: int, mlp_hidden: int = 160,
) -> tuple[float, dict[float, float]]:
    """Best learning rate by mean online accuracy on the given (meta-training) streams."""
    scores = {}
    for lr in learning_rates:
        curves = baseline_curves(name, lr, task, data, episodes, seed + TUNING_SEED_OFFSET,
                                 mlp_hidden)
        scores[lr] = float(curves.accuracy.mean())
    best = max(scores, key=lambda lr: scores[lr])
    return best, scores


def tuning_task(config: Config, steps: int) -> tuple[Task, TaskData]:
    """The meta-training distribution with episodes of ``steps``: the only data tuning sees."""
    from vsml_es.evaluator import build_eval_spec

    longer = dataclasses.replace(config, task=dataclasses.replace(config.task,
                                                                  episode_length=steps))
    spec, data = build_eval_spec(longer)
    return spec.task, data


def tune_baselines(config: Config, steps: int) -> dict[str, tuple[float, dict[float, float]]]:
    """Learning rate of every ``metatest.baselines`` entry, tuned on meta-training streams."""
    mt = config.metatest
    if not mt.baselines:
        return {}
    task, data = tuning_task(config, steps)
    tuned = {
        name: tune_baseline(name, learning_rate_grid(name, mt), task, data,
                            mt.sgd_tuning_episodes, mt.seed, mt.mlp_hidden)
        for name in mt.baselines
    }
    for name, (best, scores) in tuned.items():
        if len(scores) > 1 and best in (min(scores), max(scores)):
            key = "sgd" if GRADIENT_BASELINES[name].optimizer == "sgd" else "adam"
            print(f"warning: the best learning rate of baseline '{name}' ({best:g}) is at the "
                  f"edge of metatest.{key}_learning_rates; a wider grid may tune it better.",
                  file=sys.stderr)
    return tuned


def meta_test(
    params: Any,
    config: Config,
    out_dir: Path,
    datasets: tuple[str, ...] | None = None,
    steps: int | None = None,
    episodes: int | None = None,
    num_features: int | None = None,
) -> list[dict]:
    """Meta-test ``params`` (of ``model.learner``) beside the tuned baselines."""
    from vsml_es.learners import get_learner

    learner = MetaLearned(get_learner(config.model.learner).label, params, config.model)
    return compare_methods([learner], config, out_dir, datasets, steps, episodes, num_features)


def compare_methods(
    learners: list[MetaLearned],
    config: Config,
    out_dir: Path,
    datasets: tuple[str, ...] | None = None,
    steps: int | None = None,
    episodes: int | None = None,
    num_features: int | None = None,
) -> list[dict]:
    """Every learner and tuned baseline on every meta-test dataset, on identical streams.

    Writes ``summary.csv``, ``table.md``, ``tuning.csv`` and per dataset a curves CSV and PNG.
    """
    mt = config.metatest
    datasets = datasets or mt.datasets
    steps = steps or mt.steps
    episodes = episodes or mt.episodes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tuned = tune_baselines(config, steps)
    write_tuning_csv(out_dir / "tuning.csv", tuned)
    t = config.task
    summaries = []
    for ref in datasets:
        task, data = load_task(
            ref, "test", steps, t.num_classes, t.permute_labels, t.data_dir, num_features,
            preprocess=mt.preprocess,
        )
        all_curves = [
            learner_curves(m.params, m.model, task, data, episodes, mt.seed, m.label)
            for m in learners
        ]
        all_curves += [
            baseline_curves(name, lr, task, data, episodes, mt.seed, mt.mlp_hidden)
            for name, (lr, _) in tuned.items()
        ]
        stem = task.name.replace(":", "_")
        write_curves_csv(out_dir / f"curves_{stem}.csv", all_curves)
        plot_curves(out_dir / f"curves_{stem}.png", all_curves)
        summaries.extend(c.summary(mt.report_steps) for c in all_curves)
    write_summary_csv(out_dir / "summary.csv", summaries)
    (out_dir / "table.md").write_text(format_table(summaries) + "\n")
    return summaries


def write_tuning_csv(path: Path, tuned: dict[str, tuple[float, dict[float, float]]]) -> None:
    """Every learning rate tried and its mean online accuracy on meta-training streams."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["baseline", "learning_rate", "train_accuracy", "chosen"])
        for name, (best, scores) in tuned.items():
            for lr, score in scores.items():
                writer.writerow([name, f"{lr:g}", f"{score:.6g}", int(lr == best)])


def format_table(summaries: list[dict]) -> str:
    """Markdown table: accuracy (mean ± 95% CI over episodes) at each reported inner step."""
    if not summaries:
        return "(no results)"
    steps = [k[4:] for k in summaries[0] if k.startswith("acc@") and not k.endswith("_ci95")]
    header = ["dataset", "method", "acc first 25%", "acc last 25%",
              *[f"acc @{s}" for s in steps], "mean loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        cells = [s["dataset"], s["method"]]
        cells += [f"{100 * s[f'acc_{q}_quarter']:.1f} ± {100 * s[f'acc_{q}_quarter_ci95']:.1f}"
                  for q in ("first", "last")]
        cells += [f"{100 * s[f'acc@{k}']:.1f} ± {100 * s[f'acc@{k}_ci95']:.1f}" for k in steps]
        cells.append(f"{s['mean_loss']:.3f} ± {s['mean_loss_ci95']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    s = summaries[0]
    lines.append("")
    lines.append(
        f"Accuracy in % over {s['episodes']} episodes of {s['steps']} online steps (± 95% CI); "
        f"'@s' averages the predictions at inner steps within ±{WINDOW:.0%} of s, each made "
        "before its label was seen."
    )
    return "\n".join(lines)


def write_summary_csv(path: Path, summaries: list[dict]) -> None:
    if not summaries:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summaries[0]))
        writer.writeheader()
        writer.writerows(summaries)


def write_curves_csv(path: Path, curves: list[Curves]) -> None:
    """One row per inner step: accuracy and loss mean and 95% CI for each method."""
    steps = curves[0].accuracy.shape[1]
    header = ["step"]
    for c in curves:
        header += [f"{c.method} acc", f"{c.method} acc ci95", f"{c.method} loss",
                   f"{c.method} loss ci95"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for t in range(steps):
            row: list = [t + 1]
            for c in curves:
                row += [c.accuracy[:, t].mean(), ci95(c.accuracy[:, t]), c.losses[:, t].mean(),
                        ci95(c.losses[:, t])]
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])


def plot_steps(steps: int, points: int = 60) -> np.ndarray:
    """Log-spaced inner steps 1..steps (unique ints) for a log-axis learning curve."""
    return np.unique(np.round(np.geomspace(1, steps, points)).astype(int))


def plot_curves(path: Path, curves: list[Curves]) -> None:
    """Every method's accuracy against inner step (log axis), shaded 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = plot_steps(curves[0].accuracy.shape[1])
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for c in curves:
        per_step = [c.at_step(int(s)) for s in x]
        mean = np.array([v.mean() for v in per_step])
        err = np.array([ci95(v) for v in per_step])
        ax.plot(x, mean, label=c.method)
        ax.fill_between(x, np.clip(mean - err, 0, 1), np.clip(mean + err, 0, 1), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("inner step (examples seen)")
    ax.set_ylabel(f"online accuracy (steps within ±{WINDOW:.0%})")
    ax.set_title(f"Meta-test on {curves[0].dataset}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
