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
