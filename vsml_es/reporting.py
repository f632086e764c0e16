"""Reporting meta-test results: learning curves, 95% intervals, tables, CSVs and plots.

Pure functions of the curves (no JAX): every command that meta-tests (train, evaluate,
compare) writes its results through here, so their files look alike.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# What a meta-test writes into its output directory (a re-run replaces exactly these).
OUTPUT_FILES = ("summary.csv", "table.md", "tuning.csv", "curves_*.csv", "curves_*.png")
WINDOW = 0.1  # "accuracy at step s" averages inner steps within +-10% of s (noise of 0/1 hits)


def step_window(step: int, steps: int) -> slice:
    """The inner steps (0-based slice) that 'accuracy at step s' averages: within ±WINDOW·s."""
    lo = max(1, int(round(step * (1 - WINDOW))))
    hi = min(steps, int(round(step * (1 + WINDOW))))
    return slice(lo - 1, hi)


@dataclass
class Curves:
    method: str
    dataset: str
    losses: np.ndarray  # [episodes, steps]
    accuracy: np.ndarray  # [episodes, steps] 0/1 per prediction

    def at_step(self, step: int) -> np.ndarray:
        """Per-episode accuracy around inner step ``step`` (1-based), window +-WINDOW*step."""
        return self.accuracy[:, step_window(step, self.accuracy.shape[1])].mean(axis=1)

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


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal-approximation 95% CI of the mean over episodes."""
    n = values.shape[0]
    return float(1.96 * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


@dataclass
class Tuning:
    """How a tuned learner's hyperparameters were chosen on meta-training streams."""

    chosen: dict[str, float]  # e.g. {"learning_rate": 0.03}
    trials: list[tuple[dict[str, float], float]]  # (setting, mean online accuracy) per candidate


def write_tuning_csv(path: Path, tuned: dict[str, Tuning]) -> None:
    """Every setting tried per tuned learner, its accuracy on meta-training streams, and which
    was chosen."""
    names = sorted({name for t in tuned.values() for name in t.chosen})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["baseline", *names, "train_accuracy", "chosen"])
        for learner, tuning in tuned.items():
            for setting, score in tuning.trials:
                writer.writerow([learner, *(f"{setting[n]:g}" for n in names), f"{score:.6g}",
                                 int(setting == tuning.chosen)])


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


def read_summary_rows(path: Path, method: str | None = None) -> dict[str, dict[str, str]]:
    """Per dataset, one row of a ``summary.csv``: the meta-learned learner's (written first for
    each dataset) or, given ``method``, the first whose method name starts with it."""
    with open(path, newline="") as f:
        rows: dict[str, dict[str, str]] = {}
        for row in csv.DictReader(f):
            if method is None or row["method"].startswith(method):
                rows.setdefault(row["dataset"], row)
    return rows


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
    finish_curve_plot(fig, ax, path, f"Meta-test on {curves[0].dataset}")


def finish_curve_plot(fig: Any, ax: Any, path: Path, title: str, legend_size: int = 8,
                      title_size: float | None = None) -> None:
    """The axes every learning-curve plot shares (log steps, accuracy 0-1), then save."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel("inner step (examples seen)")
    ax.set_ylabel(f"online accuracy (steps within ±{WINDOW:.0%})")
    ax.set_title(title, fontsize=title_size)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Meta-training plots

TRAINING_METRICS = {
    "fitness_mean": "mean population fitness (online loss)",
    "accuracy_mean": "mean online accuracy in meta-training episodes",
    "mean_norm": "norm of the ES mean (meta-parameters)",
    "seconds": "seconds per generation",
}


def t_interval(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean (few seeds: a normal one is too narrow)."""
    from scipy import stats

    n = values.shape[axis]
    if n < 2:
        return np.full(np.delete(values.shape, axis), np.nan)
    return stats.t.ppf(0.975, n - 1) * values.std(axis=axis, ddof=1) / np.sqrt(n)


def plot_meta_training(path: Path, groups: dict[str, list[list[dict[str, Any]]]],
                       metrics: tuple[str, ...] = tuple(TRAINING_METRICS)) -> None:
    """One panel per metric against generation; each group (runs that differ only in their
    seed) as its mean with a shaded 95% interval across runs, a single run as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.6 * rows), dpi=110,
                             squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for label, runs in groups.items():
            series = [{r["generation"] + 1: r[metric] for r in run
                       if isinstance(r.get(metric), int | float)} for run in runs]
            common = sorted(set.intersection(*(set(s) for s in series))) if series else []
            if not common:
                continue
            values = np.array([[s[g] for g in common] for s in series], dtype=float)
            mean = values.mean(axis=0)
            name = f"{label} ({len(runs)} runs)" if len(runs) > 1 else label
            ax.plot(common, mean, label=name)
            if len(runs) > 1:
                half = t_interval(values)
                ax.fill_between(common, mean - half, mean + half, alpha=0.2)
        ax.set_xlabel("generation")
        ax.set_ylabel(metric)
        ax.set_title(TRAINING_METRICS.get(metric, metric), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if labels:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
