"""Meta-testing: learning curves of meta-learned VSML and of tuned online SGD on the same streams.

Evaluation episodes use their own fixed seed (``metatest.seed``), never the training seed, and
the SGD learning rate is chosen on meta-training data only, so nothing is tuned on the test.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import vsml
from vsml_es.baselines.sgd import linear_sgd_learner
from vsml_es.config import Config, ModelConfig
from vsml_es.episodes import episode_keys, online_episode, vsml_episode
from vsml_es.tasks import Task, TaskData, load_task

EVAL_BATCH = 16  # episodes per jitted call; bounds memory for large meta-tests
TUNING_SEED_OFFSET = 7919  # SGD tuning streams never coincide with evaluation streams


@dataclass
class Curves:
    method: str
    dataset: str
    losses: np.ndarray  # [episodes, steps]
    accuracy: np.ndarray  # [episodes, steps] 0/1 per prediction

    def summary(self) -> dict[str, float | str]:
        steps = self.accuracy.shape[1]
        quarter = max(1, steps // 4)
        first = self.accuracy[:, :quarter].mean(axis=1)
        last = self.accuracy[:, -quarter:].mean(axis=1)
        loss = self.losses.mean(axis=1)
        return {
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


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal-approximation 95% CI of the mean over episodes."""
    n = values.shape[0]
    return float(1.96 * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


@partial(jax.jit, static_argnames=("task", "model"))
def _vsml_batch(params, keys, data, task: Task, model: ModelConfig):
    return jax.vmap(vsml_episode, in_axes=(None, 0, None, None, None))(
        params, keys, data, task, model
    )


@partial(jax.jit, static_argnames=("task",))
def _sgd_batch(learning_rate, keys, data, task: Task):
    init, step = linear_sgd_learner(learning_rate, task.num_features, task.num_outputs)
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


def vsml_curves(
    params: vsml.Params, model: ModelConfig, task: Task, data: TaskData, episodes: int, seed: int,
    method: str = "VSML",
) -> Curves:
    params = jax.tree.map(jnp.asarray, params)
    losses, accs = _batched(lambda k: _vsml_batch(params, k, data, task, model),
                            eval_keys(seed, episodes))
    return Curves(method, task.name, losses, accs)


def sgd_curves(
    learning_rate: float, task: Task, data: TaskData, episodes: int, seed: int
) -> Curves:
    losses, accs = _batched(lambda k: _sgd_batch(jnp.float32(learning_rate), k, data, task),
                            eval_keys(seed, episodes))
    return Curves(f"online SGD (lr {learning_rate:g})", task.name, losses, accs)


def tune_sgd(
    learning_rates: tuple[float, ...], task: Task, data: TaskData, episodes: int, seed: int
) -> tuple[float, dict[float, float]]:
    """Best learning rate by mean online accuracy on meta-training streams."""
    scores = {}
    for lr in learning_rates:
        curves = sgd_curves(lr, task, data, episodes, seed + TUNING_SEED_OFFSET)
        scores[lr] = float(curves.accuracy.mean())
    best = max(scores, key=lambda lr: scores[lr])
    return best, scores


def meta_test(
    params: vsml.Params,
    config: Config,
    out_dir: Path,
    datasets: tuple[str, ...] | None = None,
    steps: int | None = None,
    episodes: int | None = None,
    num_features: int | None = None,
) -> list[dict]:
    """Meta-test ``params`` on each dataset beside tuned SGD; writes table, CSV and PNG."""
    mt = config.metatest
    datasets = datasets or mt.datasets
    steps = steps or mt.steps
    episodes = episodes or mt.episodes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = config.task
    train_task, train_data = load_task(
        t.dataset, t.split, steps, t.num_classes, t.permute_labels, t.data_dir
    )
    num_features = num_features or train_task.num_features
    best_lr, _ = tune_sgd(mt.sgd_learning_rates, train_task, train_data, mt.sgd_tuning_episodes,
                          mt.seed)
    summaries = []
    for ref in datasets:
        task, data = load_task(
            ref, "test", steps, t.num_classes, t.permute_labels, t.data_dir, num_features
        )
        all_curves = [
            vsml_curves(params, config.model, task, data, episodes, mt.seed),
            sgd_curves(best_lr, task, data, episodes, mt.seed),
        ]
        stem = task.name.replace(":", "_")
        write_curves_csv(out_dir / f"curves_{stem}.csv", all_curves)
        plot_curves(out_dir / f"curves_{stem}.png", all_curves)
        summaries.extend(c.summary() for c in all_curves)
    write_summary_csv(out_dir / "summary.csv", summaries)
    return summaries


def format_table(summaries: list[dict]) -> str:
    header = (f"{'dataset':<16} {'method':<24} {'acc first 25%':>16} {'acc last 25%':>16} "
              f"{'mean loss':>14}")
    lines = [header, "-" * len(header)]
    for s in summaries:
        lines.append(
            f"{s['dataset']:<16} {s['method']:<24} "
            f"{100 * s['acc_first_quarter']:>8.1f} ± {100 * s['acc_first_quarter_ci95']:<5.1f}% "
            f"{100 * s['acc_last_quarter']:>8.1f} ± {100 * s['acc_last_quarter_ci95']:<5.1f}% "
            f"{s['mean_loss']:>7.3f} ± {s['mean_loss_ci95']:<5.3f}"
        )
    if summaries:
        s = summaries[0]
        lines.append(f"({s['episodes']} episodes of {s['steps']} steps; ± is the 95% CI)")
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


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    padded = np.pad(values, (window - 1, 0), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def plot_curves(path: Path, curves: list[Curves]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = curves[0].accuracy.shape[1]
    window = max(1, steps // 40)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    x = np.arange(1, steps + 1)
    for c in curves:
        mean = smooth(c.accuracy.mean(axis=0), window)
        err = smooth(np.array([ci95(c.accuracy[:, t]) for t in range(steps)]), window)
        ax.plot(x, mean, label=c.method)
        ax.fill_between(x, mean - err, mean + err, alpha=0.2)
    ax.set_xlabel("inner step (examples seen)")
    ax.set_ylabel(f"online accuracy (moving average over {window})")
    ax.set_title(f"Meta-test on {curves[0].dataset}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
