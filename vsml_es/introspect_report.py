"""The files of ``vsml-es introspect``: a per-step trace CSV of one episode, and the accuracy
by occurrence of a label as CSV and PNG. Pure functions of numpy arrays (no JAX)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

TRACE_CSV = "trace.csv"
OCCURRENCE_CSV = "occurrence.csv"
OCCURRENCE_PNG = "occurrence.png"
# What introspect writes into its output directory (a re-run replaces exactly these).
OUTPUT_FILES = (TRACE_CSV, OCCURRENCE_CSV, OCCURRENCE_PNG, "tuning.csv")
UNIT_COLUMNS = ("logit", "error", "h_rms", "c_rms", "dc_rms")  # per output unit b: NAME_b


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def write_trace_csv(path: Path, labels: np.ndarray, logits: np.ndarray, occurrence: np.ndarray,
                    h_rms: np.ndarray, c_rms: np.ndarray, dc_rms: np.ndarray) -> None:
    """One row per step of one episode ([T] labels, [T, O] per-unit arrays).

    step, label, prediction, correct, loss, p_label, occurrence; then per output unit b:
    logit_b (the unit's forward message slot that is read as its prediction, bounded),
    error_b (the backward message it receives for this example: softmax - one-hot),
    h_rms_b / c_rms_b (RMS of its incoming connections' LSTM states after the step) and
    dc_rms_b (RMS of the change of their cell states during the step: what it learned).
    """
    labels = np.asarray(labels)
    probs = _softmax(np.asarray(logits, np.float64))
    steps, outputs = probs.shape
    onehot = np.eye(outputs)[labels]
    error = probs - onehot
    p_label = probs[np.arange(steps), labels]
    prediction = logits.argmax(axis=-1)
    per_unit = dict(zip(UNIT_COLUMNS, (logits, error, h_rms, c_rms, dc_rms), strict=True))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "label", "prediction", "correct", "loss", "p_label",
                         "occurrence",
                         *(f"{name}_{b}" for name in UNIT_COLUMNS for b in range(outputs))])
        for t in range(steps):
            writer.writerow([
                t + 1, int(labels[t]), int(prediction[t]), int(prediction[t] == labels[t]),
                f"{-np.log(max(p_label[t], 1e-300)):.6g}", f"{p_label[t]:.6g}",
                int(occurrence[t]),
                *(f"{float(per_unit[name][t, b]):.6g}" for name in UNIT_COLUMNS
                  for b in range(outputs)),
            ])


def binomial_ci95(acc: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Half-width of the normal 95% interval of a proportion (NaN without data)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.96 * np.sqrt(acc * (1 - acc) / counts)


class OccurrenceCurve(NamedTuple):
    """One learner's accuracy at the k-th occurrence of a label, k = 1..K."""

    label: str  # shown in the plot, e.g. "SGD linear (lr 0.03)"
    accuracy: np.ndarray  # [K] (NaN where no label occurred k times)
    counts: np.ndarray  # [K] predictions behind each accuracy


def write_occurrence_csv(path: Path, curves: dict[str, OccurrenceCurve]) -> None:
    """k, then per learner NAME (vsml, sgd): NAME_accuracy at the k-th occurrence of a label,
    NAME_ci95 (half-width of its 95% interval) and NAME_count (predictions behind it)."""
    names = list(curves)
    max_k = len(curves[names[0]].accuracy)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["k", *(f"{n}{suffix}" for n in names
                                for suffix in ("_accuracy", "_ci95", "_count"))])
        for k in range(max_k):
            row: list[object] = [k + 1]
            for name in names:
                curve = curves[name]
                ci = binomial_ci95(curve.accuracy, curve.counts)
                row += [f"{curve.accuracy[k]:.6g}", f"{ci[k]:.6g}", int(curve.counts[k])]
            writer.writerow(row)


def plot_occurrence(path: Path, curves: dict[str, OccurrenceCurve], chance: float,
                    title: str) -> None:
    """Accuracy at the k-th occurrence of a label, every learner side by side, with chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    width = 0.8 / max(1, len(curves))
    max_k = len(next(iter(curves.values())).accuracy)
    for i, curve in enumerate(curves.values()):
        ks = np.arange(1, max_k + 1) + (i - (len(curves) - 1) / 2) * width
        ax.bar(ks, np.nan_to_num(curve.accuracy), width, capsize=2, label=curve.label,
               yerr=np.nan_to_num(binomial_ci95(curve.accuracy, curve.counts)))
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(1, max_k + 1))
    ax.set_xlabel("k: the k-th time a label occurs in the episode")
    ax.set_ylabel("accuracy of the prediction before the label")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
