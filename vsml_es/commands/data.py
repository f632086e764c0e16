"""``vsml-es data list`` and ``vsml-es data prepare NAME``: see and get datasets offline."""

from __future__ import annotations

import argparse
import sys

from vsml_es.data import (
    DATA_DIR_ENV,
    dataset_names,
    dataset_status,
    get_spec,
    prepare_dataset,
    resolve_data_dir,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="list datasets and prepare them for offline use",
        description="List datasets and prepare them for offline use. The data dir is "
                    f"--data-dir, else ${DATA_DIR_ENV}, else ~/vsml_es_data.")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="each dataset: available, or how to get it")
    listing.add_argument("--data-dir", help="TFDS data dir to look in")
    listing.set_defaults(func=run_list)

    prepare = actions.add_parser(
        "prepare", help="build a dataset into the data dir (idempotent)",
        description="Build a dataset into the data dir as TFDS ArrayRecord. Source files are "
                    "checksum-verified first; preparing twice is a no-op, and concurrent "
                    "prepares wait for each other.")
    prepare.add_argument("name", help="dataset name (see 'vsml-es data list')")
    prepare.add_argument("--download", action="store_true",
                         help="allow downloading the source files (never done otherwise)")
    prepare.add_argument("--manual-dir", help="directory holding the original source files")
    prepare.add_argument("--data-dir", help="TFDS data dir to prepare into")
    prepare.add_argument("--no-progress", action="store_true",
                         help="no progress bar (default: shown on a terminal)")
    prepare.set_defaults(func=run_prepare)


def run_list(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    print(f"data dir: {data_dir}"
          + ("" if args.data_dir else f" (set with --data-dir or ${DATA_DIR_ENV})"))
    rows = []
    for name in dataset_names():
        spec = get_spec(name)
        status = dataset_status(name, data_dir)
        shape = "x".join(map(str, spec.example_shape))
        state = "available" if status.available else "missing"
        rows.append((name, str(spec.num_classes), shape, state, status.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("NAME", "CLASSES", "SHAPE", "STATUS")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  DETAIL")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True))
              + "  " + row[4])
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    get_spec(args.name)  # unknown names fail before anything else
    progress = sys.stderr.isatty() and not args.no_progress
    report = prepare_dataset(args.name, data_dir=args.data_dir, manual_dir=args.manual_dir,
                             download=args.download, progress=progress)
    print(report)
    return 0

