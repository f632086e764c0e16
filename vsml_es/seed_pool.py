"""Meta-test results pooled across meta-training seeds.

A claim about a meta-learner is a claim about its meta-training, which a seed can decide: the
interval that matters is across meta-training seeds, not across the episodes of one learner.
Pure functions of the per-seed output directories (their ``summary.csv`` and ``curves_*.csv``,
as ``run_metatest`` writes them), so a pooled table can be rebuilt from files at any time.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from vsml_es.reporting import WINDOW, finish_curve_plot, plot_steps, step_window, t_interval

# What a pooled comparison writes beside its per-seed directories.
POOLED_FILES = ("table.md", "summary.csv", "curves_*.png")


def read_step_accuracy(path: Path) -> dict[str, np.ndarray]:
    """Per method, the mean accuracy at each inner step (over the episodes) of a curves CSV."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], np.array(rows[1:], dtype=float)
    return {name[: -len(" acc")]: body[:, i] for i, name in enumerate(header)
            if name.endswith(" acc")}


def window_mean(per_step: np.ndarray, step: int) -> float:
    """Accuracy 'at step s' as ``Curves.at_step`` defines it (inner steps within ±10 % of s)."""
    return float(per_step[step_window(step, per_step.shape[0])].mean())


def _datasets(seed_dir: Path) -> list[str]:
    with open(seed_dir / "summary.csv", newline="") as f:
        return list(dict.fromkeys(row["dataset"] for row in csv.DictReader(f)))


def pool_seeds(seed_dirs: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    """Per dataset, per method: its per-step accuracy in each seed that has it [seeds, steps]."""
    pooled: dict[str, dict[str, list[np.ndarray]]] = {}
    for seed_dir in seed_dirs:
        for dataset in _datasets(seed_dir):
            curves = read_step_accuracy(seed_dir / f"curves_{dataset.replace(':', '_')}.csv")
            for method, per_step in curves.items():
                pooled.setdefault(dataset, {}).setdefault(method, []).append(per_step)
    return {d: {m: np.stack(v) for m, v in methods.items()} for d, methods in pooled.items()}


def pooled_rows(pooled: dict[str, dict[str, np.ndarray]],
                report_steps: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per (dataset, method): mean over seeds and the 95 % t-interval across them at
    each report step. A learner the seed does not change (the tuned baselines) gets 0."""
    rows = []
    for dataset, methods in pooled.items():
        for method, curves in methods.items():
            row: dict[str, Any] = {"dataset": dataset, "method": method,
                                   "seeds": int(curves.shape[0])}
            for step in report_steps:
                if step <= curves.shape[1]:
                    values = np.array([window_mean(c, step) for c in curves])
                    row[f"acc@{step}"] = float(values.mean())
                    row[f"acc@{step}_t95"] = (float("nan") if len(values) < 2 else 0.0
                                              if np.ptp(values) == 0 else float(t_interval(values)))
            rows.append(row)
    return rows


def format_pooled_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no results)"
    steps = [k[4:] for k in rows[0] if k.startswith("acc@") and not k.endswith("_t95")]
    header = ["dataset", "method", "seeds", *[f"acc @{s}" for s in steps]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["dataset"], row["method"], str(row["seeds"])]
        for s in steps:
            half = row.get(f"acc@{s}_t95", float("nan"))
            value = f"{100 * row[f'acc@{s}']:.1f}" if f"acc@{s}" in row else ""
            if value and np.isfinite(half) and half > 0:
                value += f" ± {100 * half:.1f}"
            cells.append(value)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy in % at inner step s (predictions within ±{WINDOW:.0%} of s, each "
              "made before its label was seen), mean over meta-training seeds ± the 95 % "
              "t-interval across seeds; no interval: the same in every seed (the tuned "
              "baselines do not depend on the meta-training seed) or one seed."]
    return "\n".join(lines)


def plot_pooled(path: Path, dataset: str, methods: dict[str, np.ndarray]) -> None:
    """Each method's mean curve over seeds, shaded with the 95 % t-interval across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = next(iter(methods.values())).shape[1]
    x = plot_steps(steps)
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    for method, curves in methods.items():
        values = np.array([[window_mean(c, int(s)) for s in x] for c in curves])
        mean = values.mean(axis=0)
        name = f"{method} ({curves.shape[0]} seeds)" if curves.shape[0] > 1 else method
        ax.plot(x, mean, label=name)
        if curves.shape[0] > 1 and np.ptp(values, axis=0).max() > 0:
            half = t_interval(values)
            ax.fill_between(x, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1),
                            alpha=0.2)
    finish_curve_plot(fig, ax, path, f"Meta-test on {dataset}: mean and 95 % interval across "
                      "meta-training seeds", legend_size=7, title_size=9)


def write_pooled(out_dir: Path, seed_dirs: list[Path],
                 report_steps: tuple[int, ...]) -> list[dict[str, Any]]:
    """``table.md``, ``summary.csv`` and one ``curves_DATASET.png`` per dataset in ``out_dir``."""
    pooled = pool_seeds(seed_dirs)
    rows = pooled_rows(pooled, report_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(format_pooled_table(rows) + "\n")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for dataset, methods in pooled.items():
        plot_pooled(out_dir / f"curves_{dataset.replace(':', '_')}.png", dataset, methods)
    return rows
