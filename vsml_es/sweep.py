"""Sweeps: a grid of config values x seeds, one ordinary run directory per trial, one table.

Everything but placing the trials is plain Python and lives here: parsing and checking the
grid (every grid point's config is validated before Ray starts), the trials' run directories
(``OUT/runs/<grid point>-seed<k>``, seed k is ``training.seed + k``), ``OUT/sweep.yaml`` (what
a rerun must match), which trials are done, and the table across seeds. Ray Tune places the
trials (``backend.run_trials``); each trial is :func:`run_trial`, idempotent on its run
directory: finished runs are skipped, interrupted ones resume from their newest checkpoint, new
ones start. The run directories are the source of truth, so a stopped sweep is continued by
running the same command again, and the table is always rebuilt from them.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vsml_es.backend import run_trials
from vsml_es.config import (
    SEED_LIMIT,
    Config,
    config_to_dict,
    parse_override,
    parse_yaml,
    read_yaml_file,
    replace,
)
from vsml_es.errors import ConfigError, PathError, Report, ResumeError
from vsml_es.experiment import experiment_from_dict, with_overrides
from vsml_es.paths import check_new_run_dir, check_output_dir, check_writable, holds_run
from vsml_es.reporting import WINDOW, read_summary_rows, t_interval
from vsml_es.resources import check_before_work
from vsml_es.resume import SAFE_TO_CHANGE, flatten, is_safe, plan_resume
from vsml_es.runs import load_run_config, plot_runs, run_status, summarize
from vsml_es.storage.atomic import atomic_write_bytes

SWEEP_FILE = "sweep.yaml"
MAX_TRIALS = 10_000  # grid points x seeds: each trial is a whole meta-training run
FORMAT = 1  # version of sweep.yaml
# What a sweep writes into its output directory (anything else there is the user's).
OUTPUT_ENTRIES = (SWEEP_FILE, "sweep.md", "sweep.csv", "sweep.png", "runs", "tune",
                  ".sweep.lock")
# Keys a rerun may change: where and how visibly trials run, never what they compute.
RERUN_MAY_CHANGE = ("distributed.", "logging.progress")
# Keys that only decide how long, how visibly, where or how a run is meta-tested: sweeping them
# would train identical runs (training.generations is the exception: it changes the result).
UNSWEEPABLE = tuple(k + "*" if k.endswith(".") else k for k in SAFE_TO_CHANGE
                    if k != "training.generations")
MAX_SLUG = 120  # characters of a grid point's directory name before it is shortened


# --------------------------------------------------------------------------------------------
# The grid


def parse_grid(texts: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """``KEY=V1,V2,...`` per text into {key: values}. The values are read as one YAML flow list
    (so ``[32,16],[64]`` is two lists and ``"a,b"`` one string); types are checked later,
    against the config."""
    grid: dict[str, list[Any]] = {}
    for text in texts:
        if "=" not in text:
            raise ConfigError(f"--grid '{text}' is not of the form KEY=V1,V2,..., e.g. "
                              "--grid training.sigma=0.05,0.1.")
        key, raw = (part.strip() for part in text.split("=", 1))
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--grid '{text}' has an empty key part; KEY is a dot path such "
                              "as training.sigma.")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one "
                              f"--grid {key}=V1,V2,...")
        if not raw:
            raise ConfigError(f"--grid {key}= has no values; give them as {key}=V1,V2,...")
        try:
            values = parse_yaml(f"[{raw}]", f"The values of --grid {key}")
        except ConfigError:  # not one YAML list: split at commas, each value on its own
            values = [parse_override(f"{key}={item}")[1] for item in raw.split(",")]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {key} has no values; give them as {key}=V1,V2,...")
        grid[key] = values
    return grid


def _griddable(key: str) -> None:
    if key == "training.seed":
        raise ConfigError("--grid training.seed: the seeds are the sweep's other axis; use "
                          "--seeds N (seed k is training.seed + k, set the first with --set "
                          "training.seed=S).")
    if is_safe(key) and key != "training.generations":
        raise ConfigError(
            f"--grid {key}: this key does not change what meta-training computes (only how a "
            "run is logged, checkpointed, placed or meta-tested), so every grid point would "
            "train the same runs. Give it once with --set; sweep keys of model, task or "
            f"training. Keys that cannot be swept: "
            f"{', '.join(UNSWEEPABLE)}."
        )


def _get(tree: dict[str, Any], key: str) -> Any:
    """The value at a dot path of a config dict (a mapping value is one value, not a tree)."""
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def _override(key: str, value: Any) -> str:
    # YAML flow style reads back as the same value: lists, mappings, strings, and .nan / .inf
    # (JSON would write NaN, which YAML reads as a string).
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _slug_part(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", _show(value)).strip("_")
    return text or "none"


@dataclass(frozen=True)
class GridPoint:
    slug: str  # directory name stem of its runs
    values: dict[str, Any]  # grid key -> value, as validated (lists, floats, ...)
    config: Config  # the base with these values, validated


def grid_points(base: Config, grid: dict[str, list[Any]]
                ) -> tuple[dict[str, list[Any]], list[GridPoint]]:
    """The grid with its values as the config reads them (``1e-3`` a float, lists), and every
    combination of them (first key slowest), each config validated.

    Each value is checked alone first (so an unknown key or a wrong type names the value),
    then each combination (values that only fail together, e.g. an odd population for an
    antithetic strategy)."""
    size = math.prod(len(values) for values in grid.values())
    if size > MAX_TRIALS:
        raise ConfigError(f"The grid has {size:,} points, more than a sweep runs ({MAX_TRIALS:,} "
                          "trials at most: each is a whole meta-training run); use fewer --grid "
                          "values.")
    canonical: dict[str, list[Any]] = {}
    for key, values in grid.items():
        _griddable(key)
        seen: list[Any] = []
        for value in values:
            try:
                config = with_overrides(base, [_override(key, value)])
            except ConfigError as err:
                raise ConfigError(f"--grid {key}={_show(value)}: {err}") from None
            value = _get(config_to_dict(config), key)
            if value in seen:
                raise ConfigError(f"--grid {key} lists {_show(value)} twice; each grid point "
                                  "must be different.")
            seen.append(value)
        canonical[key] = seen
    leaves = [key.rsplit(".", 1)[-1] for key in canonical]
    names = {key: leaf if leaves.count(leaf) == 1 else key
             for key, leaf in zip(canonical, leaves, strict=True)}
    points, slugs = [], set()
    for combo in itertools.product(*canonical.values()):
        values = dict(zip(canonical, combo, strict=True))
        try:
            config = with_overrides(base, [_override(k, v) for k, v in values.items()])
        except ConfigError as err:
            where = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
            raise ConfigError(f"Grid point {where}: {err}") from None
        slug = "-".join(f"{names[k]}_{_slug_part(v)}" for k, v in values.items()) or "base"
        if len(slug) > MAX_SLUG or slug in slugs:  # shortened, or two values read alike
            digest = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]
            slug = f"{slug[:MAX_SLUG]}-{digest}"
        slugs.add(slug)
        points.append(GridPoint(slug, values, config))
    return canonical, points


# --------------------------------------------------------------------------------------------
# The plan: every check before any work


@dataclass(frozen=True)
class Trial:
    name: str  # "<grid point slug>-seed<k>", also its directory name under OUT/runs
    point: GridPoint
    seed_index: int  # k: training.seed = base seed + k
    run_dir: Path
    config: Config  # what the trial trains with (in-process, no progress bar)
    state: str  # done | resume | new, as found when the plan was made


@dataclass(frozen=True)
class SweepPlan:
    experiment: str | None  # the experiment file, for the record
    base: Config  # the experiment with --set, before the grid
    grid: dict[str, list[Any]]  # key -> validated values
    seeds: int
    out: Path
    metatest: bool
    points: list[GridPoint]
    trials: list[Trial] = field(default_factory=list)

    @property
    def base_seed(self) -> int:
        return self.base.training.seed

    def record(self) -> dict[str, Any]:
        """What ``sweep.yaml`` holds: enough to tell whether a rerun is the same sweep."""
        return {"vsml_es_sweep": FORMAT, "experiment": self.experiment, "grid": self.grid,
                "seeds": self.seeds, "base_seed": self.base_seed,
                "config": config_to_dict(self.base)}


def trial_config(config: Config, seed: int) -> Config:
    """A grid point's config for one seed, as a trial runs it: evaluation in the trial's own
    process (Tune places the trials; no Ray inside them) and no progress bar."""
    return replace(config, [f"training.seed={seed}", "distributed.workers=0",
                            "logging.progress=false"])


def trial_state(run_dir: Path, metatest: bool) -> str:
    """``done`` (finished, and meta-tested if asked), ``resume`` (a run that did not finish,
    or finished without its meta-test) or ``new`` (no run in the directory)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not holds_run(run_dir):
        return "new"
    finished = run_status(run_dir, load_run_config(run_dir)) == "finished"
    if finished and (not metatest or (run_dir / "metatest" / "summary.csv").is_file()):
        return "done"
    return "resume"


def _check_resumable(trial: Trial) -> None:
    """A trial to continue: not running elsewhere, and resumable with its config (the same
    checks ``vsml-es resume`` makes, made here so they fail before Ray starts)."""
    status = run_status(trial.run_dir, load_run_config(trial.run_dir))
    if status == "running":
        record = json.loads((trial.run_dir / "status.json").read_text())
        raise PathError(
            f"Trial run '{trial.run_dir}' is still running (pid {record.get('pid')} on this "
            "machine): another sweep or vsml-es command is training it. Wait for it or stop "
            "it, then run the sweep again."
        )
    try:
        plan_resume(trial.run_dir, trial.config, report=lambda message: None)
    except ResumeError as err:
        raise ResumeError(f"Sweep trial {trial.name}: {err}") from None


def plan_sweep(base: Config, grid_texts: list[str] | tuple[str, ...], seeds: int, out: Path,
               *, experiment: str | None = None, metatest: bool = True) -> SweepPlan:
    """Check everything a sweep needs, before any work: the grid (keys, value types, every
    combination's config), the seeds, the datasets and memory of every grid point, the output
    directory (new, or a sweep of the same experiment, grid and seeds) and every trial's run
    directory (resumable, or new). Raises a :class:`~vsml_es.errors.UserError` that says what
    to fix."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds must be a whole number of at least 1, got {seeds!r}.")
    if base.training.seed + seeds - 1 >= SEED_LIMIT:
        raise ConfigError(f"--seeds {seeds} from training.seed={base.training.seed} reaches "
                          f"seed {base.training.seed + seeds - 1}; seeds are below {SEED_LIMIT}."
                          " Lower training.seed or --seeds.")
    if seeds > MAX_TRIALS:
        raise ConfigError(f"--seeds {seeds:,} is more than a sweep runs ({MAX_TRIALS:,} trials "
                          "at most: each is a whole meta-training run); lower --seeds.")
    grid, points = grid_points(base, parse_grid(grid_texts))
    if len(points) * seeds > MAX_TRIALS:
        raise ConfigError(f"The sweep has {len(points):,} grid points x {seeds:,} seeds = "
                          f"{len(points) * seeds:,} trials, more than {MAX_TRIALS:,} (each is a "
                          "whole meta-training run); use fewer --grid values or --seeds.")
    for point in points:
        check_before_work(point.config, metatest)
    out = Path(out)
    plan = SweepPlan(experiment, base, grid, seeds, out, metatest, points)
    _check_out(plan)
    runs = out / "runs"
    trials = []
    for point in points:
        for k in range(seeds):
            name = f"{point.slug}-seed{k}"
            config = trial_config(point.config, base.training.seed + k)
            run_dir = runs / name
            trial = Trial(name, point, k, run_dir, config, trial_state(run_dir, metatest))
            if trial.state == "resume":
                _check_resumable(trial)
            elif trial.state == "new" and run_dir.exists():
                check_new_run_dir(run_dir)  # never over files that are not a run
            trials.append(trial)
    return SweepPlan(experiment, base, grid, seeds, out, metatest, points, trials)


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(record["config"])
    return {k: v for k, v in flat.items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RERUN_MAY_CHANGE)}


def _check_out(plan: SweepPlan) -> None:
    """OUT is new or empty, or holds this very sweep (same config, grid and seeds) and only
    what sweeps write there."""
    out = plan.out
    if out.exists() and not out.is_dir():
        raise PathError(f"--out '{out}' is a file; choose a directory for the sweep.")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SWEEP_FILE).is_file():
            raise PathError(
                f"--out '{out}' is not empty and holds no vsml-es sweep (no {SWEEP_FILE}); a "
                "new sweep only goes into a new or empty directory, so nothing of yours is "
                "overwritten. Choose another --out."
            )
        check_output_dir(out, OUTPUT_ENTRIES, "--out")
        _check_same_sweep(plan, read_yaml_file(out / SWEEP_FILE, "The sweep file"))
    check_writable(out, "--out")


def _check_same_sweep(plan: SweepPlan, saved: Any) -> None:
    where = f"'{plan.out / SWEEP_FILE}'"
    if not isinstance(saved, dict) or saved.get("vsml_es_sweep") != FORMAT or not isinstance(
            saved.get("config"), dict):
        raise PathError(f"{where} is not a sweep file this vsml-es can read; choose another "
                        "--out.")
    try:
        saved_config = config_to_dict(experiment_from_dict(saved["config"]))
    except ConfigError as err:
        raise PathError(f"{where} holds a config this vsml-es cannot use ({err}); choose "
                        "another --out.") from None
    now = plan.record()
    differences = []
    saved_grid = saved.get("grid")
    if not isinstance(saved_grid, dict) or list(saved_grid.items()) != list(now["grid"].items()):
        # the order counts too: it names the grid points' run directories
        differences.append(f"grid {_flow(saved.get('grid'))} (then) -> {_flow(now['grid'])} "
                           "(now)")
    if saved.get("seeds") != now["seeds"]:
        differences.append(f"--seeds {saved.get('seeds')} (then) -> {now['seeds']} (now)")
    old, new = _comparable({"config": saved_config}), _comparable(now)
    differences += [f"{k}: {_flow(old.get(k))} (then) -> {_flow(new.get(k))} (now)"
                    for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if differences:
        raise PathError(
            f"--out '{plan.out}' holds another sweep; it differs in: {'; '.join(differences)}. "
            "Run the same command as before to continue that sweep, or choose another --out "
            "for this one."
        )


def _flow(value: Any) -> str:
    """One-line YAML, keys in their order."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000, sort_keys=False)
    return text.strip().removesuffix("\n...").removesuffix(" ...")


# --------------------------------------------------------------------------------------------
# One trial (runs inside a Ray Tune trial, in the trial's process)


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Bring one trial's run directory to done, whatever state it is in: skip a finished run,
    resume an interrupted one from its newest checkpoint, start a new one. Idempotent, so Tune
    may run it again at no cost; evaluation stays in this process."""
    from vsml_es.run import resume_training, start_training

    run_dir = Path(spec["run_dir"])
    metatest = bool(spec["metatest"])
    config = experiment_from_dict(spec["config"])
    state = trial_state(run_dir, metatest)
    if state == "done":
        outcome = "already finished"
    elif state == "resume":
        resume_training(run_dir, config, metatest=metatest, log=print)
        outcome = "resumed and finished"
    else:
        start_training(config, run_dir, metatest=metatest, log=print)
        outcome = "finished"
    return {"outcome": outcome, "host": socket.gethostname()}


# --------------------------------------------------------------------------------------------
# Running a plan


@contextmanager
def _sweep_lock(out: Path) -> Iterator[None]:
    """One sweep at a time on an output directory (two would train the same runs)."""
    path = out / ".sweep.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise PathError(f"Another vsml-es sweep (pid {holder}) is running on '{out}'. Wait "
                            "for it to end, or stop it; then run this command again.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # one per grid point: see :func:`sweep_rows`
    table: str  # Markdown, as in OUT/sweep.md
    trained: list[str]  # trials this call ran (new or resumed)
    skipped: list[str]  # trials already done
    failed: dict[str, str]  # trial name -> error
    missing: list[str]  # trials not done after this call (failed, or stopped)


def run_sweep(plan: SweepPlan, *, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
              concurrent: int | None = None, verbose: bool = False,
              log: Report = print) -> SweepResult:
    """Run the trials of ``plan`` that are not done on Ray Tune, then write the table
    (``sweep.md``, ``sweep.csv``) and the overlay plot (``sweep.png``) from the run dirs."""
    check_trial_resources(plan, cpus_per_trial, gpus_per_trial, concurrent)
    plan.out.mkdir(parents=True, exist_ok=True)
    with _sweep_lock(plan.out):
        if not (plan.out / SWEEP_FILE).is_file():
            atomic_write_bytes(plan.out / SWEEP_FILE, yaml.safe_dump(
                plan.record(), sort_keys=False, width=100).encode())
        todo = [t for t in plan.trials if trial_state(t.run_dir, plan.metatest) != "done"]
        todo_names = {t.name for t in todo}
        skipped = [t.name for t in plan.trials if t.name not in todo_names]
        specs = {t.name: {"run_dir": str(t.run_dir.absolute()),
                          "config": config_to_dict(t.config), "metatest": plan.metatest}
                 for t in todo}
        failed = run_trials(plan.base.distributed, specs, run_trial, plan.out / "tune",
                            cpus=cpus_per_trial, gpus=gpus_per_trial, concurrent=concurrent,
                            verbose=verbose, log=log)
        missing = [t.name for t in plan.trials if trial_state(t.run_dir, plan.metatest) != "done"]
        unseen = [name for name in missing if name not in failed]
        if unseen and plan.base.distributed.address is not None:
            raise PathError(
                f"Trials {', '.join(unseen[:5])} ended without error, but their run "
                f"directories under '{plan.out / 'runs'}' are not finished as seen from this "
                "machine: on a cluster, --out must be on a file system that every node mounts "
                "at the same path (NFS, a shared volume). Choose such an --out and run again."
            )
        rows = sweep_rows(plan)
        table = write_table(plan, rows)
        done = [t.run_dir for t in plan.trials if t.name not in missing]
        if done:
            plot_runs(done, plan.out / "sweep.png")
    return SweepResult(rows, table, [t.name for t in todo], skipped, failed, missing)


def check_trial_resources(plan: SweepPlan, cpus: float, gpus: float,
                          concurrent: int | None) -> None:
    """The trial resources asked for, checked with the plan (before Ray starts): positive, and
    on the private local Ray no more CPUs per trial than this machine has."""
    if not (isinstance(cpus, int | float) and np.isfinite(cpus) and cpus > 0):
        raise ConfigError(f"--cpus-per-trial must be a positive number, got {cpus!r}.")
    if not (isinstance(gpus, int | float) and np.isfinite(gpus) and gpus >= 0):
        raise ConfigError(f"--gpus-per-trial must be 0 or more, got {gpus!r}.")
    if concurrent is not None and (isinstance(concurrent, bool) or not isinstance(
            concurrent, int) or concurrent < 1):
        raise ConfigError(f"--workers (trials at once) must be at least 1, got {concurrent!r}.")
    have = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if plan.base.distributed.address is None and have and cpus > have:
        raise ConfigError(f"--cpus-per-trial {cpus:g} is more than the {have} CPU(s) of this "
                          "machine, where the private Ray runs the trials; lower it, or join "
                          "a cluster with --ray-address.")


# --------------------------------------------------------------------------------------------
# The table across seeds


def _metatest_rows(run_dir: Path) -> dict[str, dict[str, str]]:
    """The meta-learned learner's row of ``metatest/summary.csv`` per dataset."""
    return read_summary_rows(run_dir / "metatest" / "summary.csv")


def _interval(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(t_interval(array))


def sweep_rows(plan: SweepPlan) -> list[dict[str, Any]]:
    """One row per grid point, over its finished seeds: ``final_fitness`` (the mean population
    fitness of the last generation) and, with the meta-test, ``DATASET acc@S`` (the meta-learned
    learner's accuracy at inner step S), each as mean and ``_ci95`` (95 % t-interval half-width
    across seeds; NaN with one seed)."""
    rows = []
    for point in plan.points:
        done = [t.run_dir for t in plan.trials
                if t.point is point and trial_state(t.run_dir, plan.metatest) == "done"]
        row: dict[str, Any] = {**point.values, "seeds": len(done)}
        if not done:
            rows.append(row)
            continue
        fitness = [summarize(run).last_fitness for run in done]
        row["final_fitness"], row["final_fitness_ci95"] = _interval(
            [np.nan if f is None else f for f in fitness])
        if plan.metatest:
            tested = [_metatest_rows(run) for run in done]
            for dataset, first in tested[0].items():
                for column in (c for c in first if c.startswith("acc@") and
                               not c.endswith("_ci95")):
                    values = [float(t[dataset][column]) for t in tested
                              if dataset in t and t[dataset].get(column)]
                    if len(values) == len(done):
                        key = f"{dataset} {column}"
                        row[key], row[f"{key}_ci95"] = _interval(values)
        rows.append(row)
    return rows


def _metric_columns(rows: list[dict[str, Any]], grid: dict[str, list[Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in grid and k != "seeds" and not k.endswith("_ci95")
                    and k not in columns]
    return columns


def format_sweep_table(plan: SweepPlan, rows: list[dict[str, Any]]) -> str:
    """Markdown: a row per grid point, mean ± 95 % t-interval across seeds per column."""
    metrics = _metric_columns(rows, plan.grid)
    header = [*plan.grid, "seeds", *(("final fitness" if m == "final_fitness"
                                      else m.replace(" acc@", " @")) for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_show(row[k]) for k in plan.grid]
        cells.append(f"{row['seeds']}/{plan.seeds}")
        for m in metrics:
            if m not in row:
                cells.append("-")
                continue
            scale, digits = (1, 4) if m == "final_fitness" else (100, 1)
            mean, half = scale * row[m], scale * row[f"{m}_ci95"]
            cells.append(f"{mean:.{digits}f}" + ("" if np.isnan(half) else
                                                 f" ± {half:.{digits}f}"))
        lines.append("| " + " | ".join(cells) + " |")
    mt = plan.base.metatest
    first, last = plan.base_seed, plan.base_seed + plan.seeds - 1
    seeds = f"training.seed {first}" + (f"..{last}" if last > first else "")
    lines += ["", (
        f"Mean ± 95% t-interval across the finished seeds ({seeds}; the 'seeds' column counts "
        "them). Final fitness: mean population fitness (online loss, lower is better) of the "
        "last generation."
        + ("" if not plan.metatest else
           f" 'DATASET @s': accuracy in % of the meta-learned learner at inner step s "
           f"(predictions within ±{WINDOW:.0%} of s, each made before its label was seen), "
           f"{mt.episodes} episodes of {mt.steps} steps per seed.")
    )]
    return "\n".join(lines)


def write_table(plan: SweepPlan, rows: list[dict[str, Any]]) -> str:
    """``sweep.md`` (the Markdown table) and ``sweep.csv`` (every number, unrounded)."""
    table = format_sweep_table(plan, rows)
    atomic_write_bytes(plan.out / "sweep.md", (table + "\n").encode())
    metrics = _metric_columns(rows, plan.grid)
    columns = [*plan.grid, "seeds"] + [c for m in metrics for c in (m, f"{m}_ci95")]
    lines = [columns] + [[_show(row[c]) if c in plan.grid else row.get(c, "") for c in columns]
                         for row in rows]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(lines)
    atomic_write_bytes(plan.out / "sweep.csv", buffer.getvalue().encode())
    return table


