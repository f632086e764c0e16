"""``vsml-es export RUN_DIR -o NAME.vsml``: the run's meta-learned learner as one portable file."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a run's meta-learned learner as a portable .vsml file",
        description="Write one pickle-free, versioned .vsml file (docs/vsml-file-format.md) with "
        "the mean meta-parameters, the model config, input/output sizes and preprocessing, and "
        "metadata (training data, generation, meta-test scores). Load it with "
        "vsml_es.load_learner(PATH) or meta-test it with 'vsml-es evaluate PATH'.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="NAME.vsml",
                   help="output file (default: RUN_DIR/NAME.vsml with the run's name)")
    p.add_argument("--checkpoint", default="latest", metavar="latest|best|GENERATION",
                   help="which parameters: the newest valid checkpoint (default; params.npz "
                   "when there is none), the best one by mean fitness, or a generation")
    p.add_argument("--force", action="store_true",
                   help="replace NAME.vsml if it exists (refused otherwise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vsml_es.run import export_run

    out, meta = export_run(args.run_dir, args.output, args.checkpoint, force=args.force)
    training = meta["training"]
    print(f"wrote {out}: {meta['learner']} learner, {meta['num_inputs']} inputs -> "
          f"{meta['num_outputs']} outputs, generation {training['generation']} "
          f"({training['source']}); meta-test: {meta['metatest']['note']}")
    return 0
