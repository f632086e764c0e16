"""A pooled comparison table with one more learner, evaluated on its own on the same streams.

    python docs/results/screens/merge_pooled.py OUT LABEL EVAL_DIR... -- SEED_DIR...

Each EVAL_DIR is one meta-training seed's ``vsml-es evaluate LEARNER ... --episodes 16`` (the
meta-test seed and streams of a ``vsml-es compare`` run, so its curves line up with the
compare's step by step); each SEED_DIR is the same seed's ``metatest`` directory of that
``compare``. The learner's curves join each seed's curves under LABEL (first), and
``seed_pool.write_pooled`` writes OUT's table.md, summary.csv and curves PNGs as ``compare
--seeds`` would, without re-running the compare's meta-training and tuning.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

from vsml_es.seed_pool import write_pooled

REPORT_STEPS = (10, 25, 50, 100, 200, 500, 1000, 2000)


def merged_csv(new: Path, base: Path, out: Path, label: str) -> None:
    with open(new, newline="") as f:
        extra = list(csv.reader(f))
    with open(base, newline="") as f:
        rows = list(csv.reader(f))
    if [r[0] for r in extra] != [r[0] for r in rows]:
        raise SystemExit(f"{new} and {base} have different steps")
    keep = [i for i, name in enumerate(extra[0]) if name.startswith("VSML ")]
    header = [rows[0][0]] + [label + extra[0][i][len("VSML"):] for i in keep] + rows[0][1:]
    body = [[r[0]] + [e[i] for i in keep] + r[1:] for e, r in zip(extra[1:], rows[1:],
                                                                  strict=True)]
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([header, *body])


def main(out: Path, label: str, eval_dirs: list[Path], seed_dirs: list[Path]) -> None:
    if len(eval_dirs) != len(seed_dirs):
        raise SystemExit("give one EVAL_DIR per SEED_DIR")
    merged = []
    for i, (new, base) in enumerate(zip(eval_dirs, seed_dirs, strict=True)):
        target = out / f"seed{i}"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / "summary.csv", target / "summary.csv")
        for curves in sorted(base.glob("curves_*.csv")):
            merged_csv(new / curves.name, curves, target / curves.name, label)
        merged.append(target)
    write_pooled(out, merged, REPORT_STEPS)


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--")
    main(Path(args[0]), args[1], [Path(a) for a in args[2:split]],
         [Path(a) for a in args[split + 1:]])
