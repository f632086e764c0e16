"""Property-based fuzzing of every input path (Hypothesis): generated config keys and values,
experiment files, byte flips and truncations of learner files, parameter files and
checkpoints, and bad arrays for the learner API.

The property everywhere: a clear error (exit 2 from the CLI, a ``UserError`` from the API)
or a valid result, never a traceback, and never a change to a file the input came from. The
CI profile is fixed-seed and quick; ``VSML_ES_FUZZ=thorough`` runs 2,000 cases per target:

    VSML_ES_FUZZ=thorough python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import read_state, write_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vsml_es import cli
from vsml_es.classifier import OnlineClassifier
from vsml_es.config import Config, _valid_paths
from vsml_es.errors import UserError
from vsml_es.resume import plan_resume
from vsml_es.storage.checkpoint import checkpoint_dirs, latest_checkpoint
from vsml_es.storage.learner_file import read_learner_file

settings.register_profile(
    "ci", max_examples=40, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "thorough", max_examples=2000, derandomize=False, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("VSML_ES_FUZZ", "ci"))
if os.environ.get("VSML_ES_FUZZ_EXAMPLES"):  # e.g. a shorter thorough run of one target
    settings.register_profile("custom", parent=settings(),
                              max_examples=int(os.environ["VSML_ES_FUZZ_EXAMPLES"]))
    settings.load_profile("custom")

QUICKSTART = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = ["training.population_size=8", "training.eval_chunk=8", "training.generations=2",
        "task.episode_length=8", "checkpoint.every=1", "logging.progress=false",
        "distributed.workers=0"]
KEYS = _valid_paths(Config)


def run_cli(*argv: str) -> tuple[int, str]:
    """The CLI in this process: its exit code and stderr. An exception escaping main() is a
    traceback the user would have seen: the test fails with it."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(list(argv))
        except SystemExit as stop:  # argparse's own usage errors (exit 2, usage + message)
            code = stop.code
    return code, err.getvalue()


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.splitlines()
        assert any(line.startswith(("error: ", "usage: ")) for line in lines), err
        assert "Traceback" not in err, err


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------
# Generated values

yaml_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: ".nan" if f != f else (".inf" if f == float("inf") else
                                         "-.inf" if f == float("-inf") else repr(f))),
    st.sampled_from(["true", "false", "null", "~", "''", "1e-3", "1e400", "-0", "0x10",
                     "[]", "{}", "[1, 2]", "{a: 1}", "*x", "&x 1", "!!python/object:os.system",
                     "'../../etc'", "Open_ES", "SNES", "digits:test", "nope:test", "[digits]",
                     "{fwm: {sigma: 0.1}}", "{lrate_init: abc}", "[[1]]", "'\x00'", "- 1"]),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=0, max_size=20),
                 st.sampled_from(KEYS).map(lambda k: k + ".deeper"),
                 st.sampled_from(KEYS).map(lambda k: k[:-1]))


@given(overrides=st.lists(st.tuples(keys, yaml_scalars), min_size=1, max_size=3))
def test_fuzz_config_overrides(overrides):
    argv = ["config", QUICKSTART]
    for key, value in overrides:
        argv += ["--set", f"{key}={value}"]
    assert_clean(*run_cli(*argv))


@given(content=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.lists(st.tuples(st.sampled_from(KEYS), yaml_scalars), max_size=6).map(
        lambda items: "\n".join(f"{k.split('.')[0]}:\n  {k.split('.', 1)[-1]}: {v}"
                                if "." in k else f"{k}: {v}" for k, v in items)),
))
def test_fuzz_experiment_files(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("exp") / "exp.yaml"
    path.write_bytes(content.encode("utf-8", "surrogatepass") if isinstance(content, str)
                     else content)
    before = path.read_bytes()
    assert_clean(*run_cli("config", str(path)))
    assert path.read_bytes() == before


# --------------------------------------------------------------------------------------------
# Files written by vsml-es, damaged


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny finished run (in-process) and its exported learner file."""
    root = tmp_path_factory.mktemp("fuzzrun")
    run_dir = root / "run"
    sets = [arg for kv in TINY for arg in ("--set", kv)]
    assert run_cli("train", QUICKSTART, *sets, "--run-dir", str(run_dir),
                   "--no-metatest")[0] == 0
    assert run_cli("export", str(run_dir), "-o", str(root / "learner.vsml"))[0] == 0
    return run_dir, root / "learner.vsml"


def damage(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        out[position % len(out)] ^= value or 1
    return bytes(out[:cut] if cut is not None else out)


damages = st.tuples(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)),
                             max_size=4),
                    st.one_of(st.none(), st.integers(0, 2**16)))


@pytest.mark.parametrize("which", ["learner.vsml", "params.npz"])
@given(change=damages)
def test_fuzz_learner_and_parameter_files(run_files, tmp_path_factory, which, change):
    run_dir, learner = run_files
    source = learner if which == "learner.vsml" else run_dir / "params.npz"
    path = tmp_path_factory.mktemp("damaged") / source.name
    path.write_bytes(damage(source.read_bytes(), *change))
    before = path.read_bytes()
    try:
        params, spec = read_learner_file(path)
    except UserError as err:
        assert str(err)
    else:  # a damage that left a valid file: it loads as a working learner
        assert all(np.all(np.isfinite(v)) for v in params.values()) and spec.num_outputs > 0
    assert path.read_bytes() == before


@given(change=damages, part=st.sampled_from(["state.npz", "meta.json", "MANIFEST.json"]))
def test_fuzz_checkpoint_files(run_files, tmp_path_factory, change, part):
    run_dir, _ = run_files
    copy = tmp_path_factory.mktemp("ckpt") / "run"
    shutil.copytree(run_dir, copy)
    newest = checkpoint_dirs(copy)[-1][1]
    (newest / part).write_bytes(damage((newest / part).read_bytes(), *change))
    before = snapshot(copy)
    found = latest_checkpoint(copy, report=lambda message: None)
    assert found is not None  # the older, intact checkpoint at least
    try:
        plan = plan_resume(copy, report=lambda message: None)
    except UserError as err:
        assert str(err)
    else:
        assert plan.checkpoint is not None
    assert snapshot(copy) == before  # looking is not touching


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def write_meta_behind_its_manifest(checkpoint: Path, meta: dict) -> None:
    """Replace meta.json and record its new hash and size, as if written so."""
    payload = json.dumps(meta).encode()
    (checkpoint / "meta.json").write_bytes(payload)
    manifest = json.loads((checkpoint / "MANIFEST.json").read_text())
    manifest["files"]["meta.json"] = {"sha256": hashlib.sha256(payload).hexdigest(),
                                      "size": len(payload)}
    (checkpoint / "MANIFEST.json").write_text(json.dumps(manifest))


@given(key=st.sampled_from(["es_state", "es_params", "mean_params", "config", "generation",
                            "rng_key_impl", "format_version", "metrics_position", "format"]),
       value=json_values)
def test_fuzz_checkpoint_metadata_with_a_matching_manifest(run_files, tmp_path_factory, key,
                                                           value):
    """Well-formed JSON of the wrong shape whose manifest was rewritten to match: the SHA-256
    check passes, so the structure itself must be checked."""
    run_dir, _ = run_files
    copy = tmp_path_factory.mktemp("meta") / "run"
    shutil.copytree(run_dir, copy)
    newest = checkpoint_dirs(copy)[-1][1]
    meta = json.loads((newest / "meta.json").read_text())
    meta[key] = value
    write_meta_behind_its_manifest(newest, meta)
    code, err = run_cli("resume", str(copy), "--no-metatest", "--set",
                        "training.generations=3")
    assert_clean(code, err)


# --------------------------------------------------------------------------------------------
# The learner API


arrays = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill),
              st.sampled_from([(0,), (3,), (0, 4), (3, 4), (2, 8, 8), (2, 8, 8, 1), (5, 64),
                               (1, 13), (2, 0)]),
              st.sampled_from([0.0, 1.0, np.nan, np.inf, -1e30, 7])),
    st.sampled_from([np.array([["a", "b"]]), np.array([[1 + 2j]]), np.array([[None, 1]],
                     dtype=object), [[1, 2], [3]], "text", None, 3.0, np.ones((2, 3), bool)]),
)
labels = st.one_of(st.sampled_from([[0, 1, 0], [0], [], [5, 6], ["a", "b"], None, [[0]],
                                    np.array([0.5, 1.5]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]),
                   st.lists(st.integers(-3, 12), max_size=6))


@given(X=arrays, y=labels, classes=st.one_of(st.none(), labels), predict_first=st.booleans())
def test_fuzz_learner_api(run_files, X, y, classes, predict_first):
    _, learner = run_files
    params, spec = read_learner_file(learner)
    clf = OnlineClassifier(params, spec, normalize="none")
    try:
        if predict_first:
            clf.predict(X)
        clf.partial_fit(X, y, classes=classes)
        proba = clf.predict_proba(X)
    except UserError as err:  # LearnerError: a ValueError and a UserError
        assert str(err)
    else:
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-4)


@pytest.fixture(scope="module")
def restorer(run_files):
    """A trainer for the fuzz run, built once: restoring is what a resume does with metadata."""
    from vsml_es.experiment import experiment_from_dict
    from vsml_es.trainer import Trainer

    run_dir, _ = run_files
    config = experiment_from_dict(load_yaml_dict(run_dir / "config.yaml"))
    return Trainer(config, run_dir)


def load_yaml_dict(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


@given(key=st.sampled_from(["es_state", "es_params", "mean_params", "config", "generation",
                            "rng_key_impl", "format_version", "metrics_position", "format"]),
       value=json_values, spec_field=st.sampled_from(["name", "path", "dtype", "shape",
                                                      "key_impl", "weak_type"]),
       spec_value=json_values)
def test_fuzz_checkpoint_metadata_restore(run_files, tmp_path_factory, restorer, key, value,
                                          spec_field, spec_value):
    """The in-process core of the previous target (fast enough for 2,000 cases): metadata of
    the wrong shape, top level or inside one array description, behind a matching manifest,
    read and restored the way a resume does."""

    from vsml_es.errors import CheckpointError
    from vsml_es.storage.checkpoint import read_checkpoint

    run_dir, _ = run_files
    newest = checkpoint_dirs(run_dir)[-1][1]
    copy = tmp_path_factory.mktemp("restore") / newest.name
    shutil.copytree(newest, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta[key] = value
    if isinstance(meta.get("es_state"), list) and meta["es_state"] and isinstance(
            meta["es_state"][0], dict):
        meta["es_state"][0][spec_field] = spec_value
    write_meta_behind_its_manifest(copy, meta)
    try:
        checkpoint = read_checkpoint(copy)
        restorer.restore(checkpoint)
    except (CheckpointError, UserError) as err:
        assert str(err)


# --------------------------------------------------------------------------------------------
# Round two (issue 30): one generator per family


user_files = st.dictionaries(
    st.sampled_from(["config.yaml", "metrics.jsonl", "metrics.csv", "status.json", "params.npz",
                     "notes.md", "checkpoints/gen-000001/MANIFEST.json",
                     "checkpoints/gen-000001/meta.json", "plots/meta_training.png"]),
    st.one_of(st.binary(max_size=200),
              st.sampled_from([b"name: mine\nmodel: {}\ntask: {}\ntraining: {}\n",
                               b'{"generation": 0, "fitness_mean": 1.0}\n',
                               b'{"state": "running", "generation": 1}',
                               b'{"format": "vsml-es-run"}', b'{"format": "vsml-es-checkpoint"}',
                               b"# my notes\nname: mine\ntraining:\n  generations: 3\n"])),
    min_size=1, max_size=5)


@given(contents=user_files, command=st.sampled_from(["train", "resume", "train-resume", "plot",
                                                     "runs", "export"]))
def test_fuzz_user_directories_are_never_runs(tmp_path_factory, contents, command):
    """Data loss: a directory of the user's (whatever files vsml-es also writes it holds, except
    what only vsml-es writes completely) is never taken for a run nor written into."""
    mine = tmp_path_factory.mktemp("mine") / "dir"
    for name, payload in contents.items():
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_bytes(payload)
    before = snapshot(mine)
    argv = {"train": ["train", QUICKSTART, "--run-dir", str(mine), "--no-metatest"],
            "resume": ["resume", str(mine), "--no-metatest"],
            "train-resume": ["train", "--resume", str(mine), "--no-metatest"],
            "plot": ["plot", str(mine)], "runs": ["runs", str(mine)],
            "export": ["export", str(mine), "-o", str(mine.parent / "x.vsml")]}[command]
    code, err = run_cli(*argv)
    assert_clean(code, err)
    if command != "runs":
        assert code == 2, err
    assert snapshot(mine) == before
    assert not (mine.parent / "x.vsml").exists()


sizes = st.fixed_dictionaries({
    "training.population_size": st.sampled_from([2, 64, 4096, 65536, 2**20]),
    "training.eval_chunk": st.sampled_from([1, 8, 1024, 16384, 65536]),
    "task.episode_length": st.sampled_from([1, 100, 10**4, 10**6]),
    "model.hidden_layers": st.sampled_from([[], [32], [1024], [4096, 4096], [65536]]),
    "model.state_size": st.sampled_from([1, 16, 256, 1024]),
    "training.generations": st.sampled_from([1, 1000, 10**7]),
    "metatest.steps": st.sampled_from([1, 1000, 10**6]),
    "metatest.episodes": st.sampled_from([1, 64, 10**5]),
    "metatest.datasets": st.sampled_from([["digits:test"], ["digits:test@64x64"],
                                          ["digits:test@1024x1024"], ["digits:test@8x8"]]),
})


@given(values=sizes, memory=st.sampled_from([2**30, 2**32, 2**34, 2**36, None]))
def test_fuzz_limits_per_machine(monkeypatch, values, memory):
    """Limits per machine: the checks before work refuse with a UserError (never another
    error), exactly when the estimate exceeds the memory or the work bound; a larger machine
    never refuses what a smaller one accepts."""
    from vsml_es import resources
    from vsml_es.experiment import load_experiment

    overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    overrides += ["metatest.baselines=[sgd]", "distributed.workers=0"]
    try:
        config = load_experiment(QUICKSTART, overrides)
    except UserError:
        return  # a bound of the config itself (e.g. a layer too wide to fit a VSML)
    if memory is None:
        monkeypatch.delenv("VSML_ES_MEMORY_BYTES", raising=False)
    else:
        monkeypatch.setenv("VSML_ES_MEMORY_BYTES", str(memory))

    def refused() -> str | None:
        try:
            resources.check_fits(config, 64)
            resources.check_evaluate(config, None, ("vsml",))
        except UserError as err:
            assert "lower" in str(err).lower(), err
            return str(err)
        return None

    verdict = refused()
    if verdict is None and memory is not None:
        monkeypatch.setenv("VSML_ES_MEMORY_BYTES", str(memory * 4))
        assert refused() is None  # more memory: still accepted


@given(seeds=st.integers(10_001, 2**62), command=st.sampled_from(["sweep", "compare"]))
def test_fuzz_unbounded_seed_counts_are_refused(tmp_path_factory, seeds, command):
    out = tmp_path_factory.mktemp("seeds") / "out"
    code, err = run_cli(command, QUICKSTART, "--seeds", str(seeds), "--out", str(out))
    assert code == 2 and "--seeds" in err, err
    assert not out.exists()


poisons = st.lists(st.tuples(st.integers(0, 63), st.integers(0, 2**20),
                            st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 3.5])),
                  max_size=4)


def _poison_some(checkpoint: Path, changes: list[tuple[int, int, float]]) -> bool:
    """Set single elements of the mean parameters, manifest rewritten; whether any is now
    non-finite."""
    arrays = read_state(checkpoint)
    names = sorted(n for n in arrays if n.startswith("mean/"))
    for which, element, value in changes:
        array = arrays[names[which % len(names)]].copy()
        array.reshape(-1)[element % array.size] = value
        arrays[names[which % len(names)]] = array
    write_state(checkpoint, arrays)
    return not all(np.all(np.isfinite(arrays[n])) for n in names)


@given(changes=st.lists(poisons, min_size=2, max_size=2))
def test_fuzz_diverged_checkpoints(run_files, tmp_path_factory, changes):
    """A diverged run: NaN/inf meta-parameters (any element of any array) behind a consistent
    manifest are skipped for the newest finite checkpoint; with none finite, the resume says
    how to fix it; large finite values are no divergence."""
    run_dir, _ = run_files
    copy = tmp_path_factory.mktemp("diverged") / "run"
    shutil.copytree(run_dir, copy)
    dirs = checkpoint_dirs(copy)[-2:]
    finite = [g for (g, path), change in zip(dirs, changes, strict=True)
              if not _poison_some(path, change)]
    before = snapshot(copy)
    found = latest_checkpoint(copy, report=lambda message: None)
    assert (found.generation if found else None) == (finite[-1] if finite else None)
    try:
        plan = plan_resume(copy, report=lambda message: None)
    except UserError as err:
        assert not finite and "diverged" in str(err) and "learning_rate" in str(err)
    else:
        assert plan.checkpoint is not None and plan.checkpoint.generation == finite[-1]
    assert snapshot(copy) == before


metadata_edits = st.tuples(
    st.sampled_from(["num_outputs", "num_inputs", "input.example_shape", "input.stats.0.std",
                     "input.stats.0.mean", "input.stats.0.dataset", "input.stats",
                     "per_dataset_outputs", "model.state_size", "model.hidden_layers",
                     "model.learner", "input.preprocess.normalize", "input.preprocess.resize",
                     "config.task.num_classes", "config.model", "metadata_sha256"]),
    st.one_of(json_values, st.integers(-(2**31), 2**31), st.sampled_from(
        [0, 1, 2, 10, 64, 2**24 - 1, 0.0, -1.0, 1e-300, [8, 8, 1], [64], [-8, -8, 1], [0],
         [2**20, 2**20], True, "digits", "example", []])),
    st.booleans())


def _set_path(tree: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = tree
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(node, dict | list):
            return
    if isinstance(node, list):
        if node:
            node[int(last) % len(node)] = value
    else:
        node[last] = value


@given(edit=metadata_edits)
def test_fuzz_learner_file_metadata(run_files, tmp_path_factory, edit):
    """Learner-file metadata: any edited field is refused with a message, or the file still
    reads as one consistent learner (sizes, shape, statistics and model agreeing with the run
    config evaluate builds from), which the classifier accepts."""
    from vsml_es.experiment import learner_file_config
    from vsml_es.storage.params import load_params, save_params

    _, learner = run_files
    arrays, meta = load_params(learner)
    path_, value, signed = edit
    if not signed:
        meta.pop("metadata_sha256", None)
    _set_path(meta, path_, value)
    path = tmp_path_factory.mktemp("meta") / "edited.vsml"
    try:
        save_params(path, arrays, meta)
    except (TypeError, ValueError):  # not JSON (NaN keys and such): nothing to read
        return
    try:
        params, spec = read_learner_file(path)
        config = learner_file_config(path, spec.info)
        OnlineClassifier(params, spec)
    except UserError as err:
        assert str(err)
        return
    assert config.model == spec.model and config.task.num_classes == spec.num_outputs
    assert config.task.preprocess == spec.preprocess
    assert all(np.isfinite(m) and np.isfinite(s) and s > 0 for _, m, s in spec.stats)
    if spec.example_shape is not None:
        assert int(np.prod(spec.example_shape)) == spec.num_inputs


@given(kwargs=st.dictionaries(st.sampled_from(["optimizer", "std_schedule", "fitness_shaping_fn",
                                               "metrics_fn", "kernel", "sampling_fn",
                                               "subspace_dims", "use_antithetic_sampling",
                                               "lrate_init", "nope"]),
                              yaml_scalars, min_size=1, max_size=2),
       strategy=st.sampled_from(["Open_ES", "SNES", "CMA_ES", "SV_Open_ES", "Sep_CMA_ES"]))
def test_fuzz_strategy_kwargs(kwargs, strategy):
    """Weak messages: every strategy keyword argument a config can hold is refused with a
    message naming it, never a raw AttributeError."""
    flow = "{" + ", ".join(f"{k}: {v}" for k, v in kwargs.items()) + "}"
    code, err = run_cli("config", QUICKSTART, "--set", f"training.strategy={strategy}",
                        "--set", f"training.strategy_kwargs={flow}")
    assert_clean(code, err)
    assert "object has no attribute" not in err, err


@given(values=st.lists(yaml_scalars, min_size=1, max_size=3),
       key=st.sampled_from(["training.sigma", "training.learning_rate", "model.hidden_layers",
                            "training.strategy", "task.episode_length", "name"]))
def test_fuzz_sweep_grids(tmp_path_factory, values, key):
    """Weak messages: a sweep grid of any values is planned or refused with a message that
    names the grid value, before anything is written."""
    from vsml_es.experiment import load_experiment
    from vsml_es.sweep import plan_sweep

    out = tmp_path_factory.mktemp("sweep") / "out"
    base = load_experiment(QUICKSTART, ["distributed.workers=0"])
    try:
        plan_sweep(base, [f"{key}={','.join(map(str, values))}"], 1, out, metatest=False)
    except UserError as err:
        assert str(err), err
        assert "got str ('NaN')" not in str(err) and "got str ('Infinity')" not in str(err)
    assert not out.exists()


run_dir_edits = st.tuples(
    st.sampled_from(["config.yaml", "metrics.jsonl", "metrics.csv", "status.json",
                     ".vsml-es-run", "params.npz"]),
    st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
              json_values.map(lambda v: json.dumps(v).encode()),
              st.sampled_from([b"", b"\n", b'{"generation": "x"}\n', b"[1, 2]\n",
                               b'{"state": "running", "generation": 1, "pid": -1, '
                               b'"host": "h", "updated": 0}'])),
    st.sampled_from(["runs", "plot", "export", "resume-plan"]))


@given(edit=run_dir_edits)
def test_fuzz_what_a_user_edits_in_a_run_directory(run_files, tmp_path_factory, edit):
    """Weak messages: a run directory whose files the user edited between runs: every command
    that reads it exits 0 or 2 with a message, never a traceback."""
    run_dir, _ = run_files
    name, payload, command = edit
    copy = tmp_path_factory.mktemp("edited") / "run"
    shutil.copytree(run_dir, copy)
    (copy / name).write_bytes(payload)
    if command == "resume-plan":
        try:
            plan_resume(copy, report=lambda message: None)
        except UserError as err:
            assert str(err)
        return
    argv = {"runs": ["runs", str(copy)],
            "plot": ["plot", str(copy), "-o", str(copy.parent / "p.png")],
            "export": ["export", str(copy), "-o", str(copy.parent / "x.vsml")]}[command]
    assert_clean(*run_cli(*argv))
