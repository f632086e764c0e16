"""Every bad input family found by a skeptical user: exit 2 with a message that says how to fix
it, before any work, and nothing of the user's changed. (tests/test_fuzz.py generates many
more cases of each family.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vsml_es import cli
from vsml_es.experiment import load_experiment
from vsml_es.storage.checkpoint import MANIFEST, checkpoint_dirs
from vsml_es.storage.params import load_params, save_params

QUICKSTART = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = ["training.population_size=8", "training.eval_chunk=8", "training.generations=2",
        "task.episode_length=8", "checkpoint.every=1", "logging.progress=false",
        "distributed.workers=0", "metatest.episodes=2", "metatest.steps=8",
        "metatest.sgd_tuning_episodes=2", "metatest.datasets=[digits:test]"]


def sets(extra: list[str] = ()) -> list[str]:
    return [arg for kv in [*TINY, *extra] for arg in ("--set", kv)]


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, " ".join(capsys.readouterr().err.split())


def files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("robust") / "run"
    assert cli.main(["train", QUICKSTART, *sets(), "--run-dir", str(run_dir),
                     "--no-metatest"]) == 0
    return run_dir


@pytest.mark.parametrize("override, message", [
    ("training.sigma=.nan", "must be finite"),
    ("training.sigma=.inf", "must be finite"),
    ("training.learning_rate=.nan", "must be finite"),
    ("model.output_bound=.inf", "must be finite"),
    ("training.population_size=10000000000", "at most 1,048,576"),
    ("training.seed=1180591620717411303424", "beyond a 64-bit integer"),
    ("training.seed=4294967296", "seeds are between 0 and 2147483647"),
    ("name=../../escaped", "no path separators"),
    ("name=/tmp/abs", "no path separators"),
    ("task.dataset=nope", "Unknown dataset 'nope'"),
    ("metatest.datasets=[digits:test, nope:test]", "metatest.datasets[1]"),
    ("training.strategy_kwargs={optimizer: adam}", "takes a Python object"),
    ("training.strategy_kwargs={optimizer: 5}", "set training.optimizer (adam or sgd)"),
    ("training.population_size=1", "Use 2."),
    ("training.foo.bar=1", "training has no section 'foo'"),
    ("training=5", "--set training.KEY=VALUE"),
    ("metatest.steps=100000000", "at most 1,000,000"),
    ("model.hidden_layers=[60000, 60000]", "more than this machine's"),
])
def test_bad_values_are_refused_before_work(tmp_path, capsys, override, message):
    code, err = run(capsys, "train", QUICKSTART, *sets([override]), "--run-dir",
                    tmp_path / "never")
    assert code == 2 and err.startswith("error:") and message in err, err
    assert not (tmp_path / "never").exists()
    if override.startswith("training.foo"):
        assert "training.sigma" not in err.split("Keys of")[0]


def test_yaml_traps_are_refused(tmp_path, capsys):
    cases = {
        "alias.yaml": (b"training: &t {sigma: 0.1}\nother: *t\n", "anchors and aliases"),
        "dup.yaml": (b"name: a\nname: b\n", "appears twice"),
        "binary.yaml": (bytes(range(256)), "not UTF-8 text"),
        "bomb.yaml": (b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n",
                      "anchors and aliases"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        for command in ("config", "train", "compare"):
            code, err = run(capsys, command, path, "--set", "distributed.workers=0")
            assert code == 2 and message in err, (name, command, err)
    code, err = run(capsys, "config", tmp_path)
    assert code == 2 and "is a directory" in err
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float key takes it as the number it is.
    assert load_experiment(None, ["training.sigma=1e-3"]).training.sigma == 0.001


def test_a_users_directory_is_never_written_into(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my notes\n")
    (mine / "params.npz").write_bytes(b"my data")
    before = files(mine)
    code, err = run(capsys, "train", QUICKSTART, *sets(), "--run-dir", mine)
    assert code == 2 and "holds no vsml-es run" in err
    assert files(mine) == before
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, err = run(capsys, "train", QUICKSTART, *sets(), "--run-dir", a_file)
    assert code == 2 and "is a file" in err and a_file.read_text() == "x"


def test_output_paths_are_checked_and_never_overwritten(finished, tmp_path, capsys):
    mine = tmp_path / "report.txt"
    mine.write_text("mine")
    code, err = run(capsys, "evaluate", finished / "params.npz", "--out", mine)
    assert code == 2 and "is a file" in err
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.md").write_text("mine")
    code, err = run(capsys, "evaluate", finished / "params.npz", "--out", notes)
    assert code == 2 and "did not write (todo.md)" in err
    code, err = run(capsys, "export", finished, "-o", tmp_path)
    assert code == 2 and ".vsml" in err
    (tmp_path / "dir.vsml").mkdir()
    code, err = run(capsys, "export", finished, "-o", tmp_path / "dir.vsml")
    assert code == 2 and "is a directory" in err
    target = tmp_path / "mine.vsml"
    target.write_text("mine")
    code, err = run(capsys, "export", finished, "-o", target)
    assert code == 2 and "exists" in err and target.read_text() == "mine"
    assert run(capsys, "export", finished, "-o", target, "--force")[0] == 0
    assert load_params(target)[1]["format"] == "vsml-learner"
    code, err = run(capsys, "compare", QUICKSTART, *sets(), "--out", notes)
    assert code == 2 and "did not write" in err and files(notes) == {notes / "todo.md": b"mine"}


def test_evaluate_checks_every_dataset_before_any_output(finished, tmp_path, capsys):
    out = tmp_path / "eval"
    code, err = run(capsys, "evaluate", finished / "params.npz", "--dataset", "digits:test",
                    "--dataset", "nope:test", "--out", out)
    assert code == 2 and "Unknown dataset 'nope'" in err and not out.exists()


def test_data_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "data"
    a_file.write_text("x")
    code, err = run(capsys, "data", "prepare", "fashion_mnist", "--data-dir", a_file)
    assert code == 2 and "which is a file" in err and a_file.read_text() == "x"


def test_malformed_learner_files(finished, tmp_path, capsys):
    params, meta = load_params(finished / "params.npz")
    cases = {
        "nan.npz": ({**params, "lstm_b": np.full_like(params["lstm_b"], np.nan)}, meta,
                    "non-finite values"),
        "shape.npz": (params, {**meta, "config": ["not", "a", "mapping"]}, "cannot use"),
        "sizes.npz": (params, {**meta, "num_outputs": "ten"}, "cannot use"),
    }
    for name, (arrays, info, message) in cases.items():
        save_params(tmp_path / name, arrays, info)
        code, err = run(capsys, "evaluate", tmp_path / name, "--out", tmp_path / f"{name}-out")
        assert code == 2 and message in err, (name, err)
        assert not (tmp_path / f"{name}-out").exists()
    vsml_file = tmp_path / "learner.vsml"
    assert run(capsys, "export", finished, "-o", vsml_file)[0] == 0
    arrays, info = load_params(vsml_file)
    save_params(vsml_file, arrays, {**info, "format_version": "1"})
    code, err = run(capsys, "evaluate", vsml_file)
    assert code == 2 and "invalid .vsml format version '1'" in err and "Upgrade" not in err
    save_params(vsml_file, arrays, {**info, "input": [1, 2]})
    code, err = run(capsys, "evaluate", vsml_file)
    assert code == 2 and "input is list, not a mapping" in err


def test_a_manifest_of_the_wrong_shape_falls_back_to_the_previous_checkpoint(
        finished, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    newest = checkpoint_dirs(copy)[-1][1]
    (newest / MANIFEST).write_text(json.dumps({"format": "vsml-es-checkpoint",
                                               "files": ["state.npz"]}))
    code, err = run(capsys, "resume", copy, "--no-metatest")
    assert code == 0, err
    assert "is unusable: its MANIFEST.json does not list files" in err
    assert "using the previous valid checkpoint" in err


def test_resume_of_a_run_whose_config_is_binary(finished, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    shutil.rmtree(copy / "checkpoints")
    (copy / "config.yaml").write_bytes(b"\xff\xfe\x00binary")
    code, err = run(capsys, "resume", copy)
    assert code == 2 and "not UTF-8 text" in err


# --------------------------------------------------------------------------------------------
# Round two (issue 30): data loss, a diverged run, learner-file metadata, limits per machine,
# weak messages.

HAND_WRITTEN = ("# my experiment: keep these notes\nname: mine\nmodel:\n  hidden_layers: []\n"
                "task: {dataset: digits}\ntraining:\n  generations: 3   # short\n")


def cli_subprocess(*argv: str, cwd: Path | None = None, timeout: float = 300):
    """The real console entry point in a subprocess (what a user runs)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "vsml_es.cli", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_a_users_config_yaml_is_never_taken_for_a_run(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text(HAND_WRITTEN)
    (mine / "metrics.jsonl").write_text('{"generation": 0, "fitness_mean": 1.0}\n')
    before = files(mine)
    for argv in (["train", QUICKSTART, *sets(), "--run-dir", mine],
                 ["resume", mine, "--no-metatest"],
                 ["train", "--resume", mine, "--no-metatest"],
                 ["plot", mine]):
        result = cli_subprocess(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "holds no vsml-es run" in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert files(mine) == before, argv
    listing = cli_subprocess("runs", tmp_path)
    assert listing.returncode == 0 and "no runs under" in listing.stdout


def test_a_run_is_marked_and_older_unmarked_runs_still_resume(finished, tmp_path, capsys):
    from vsml_es.paths import RUN_MARKER, holds_run

    assert (finished / RUN_MARKER).is_file() and holds_run(finished)
    legacy = tmp_path / "legacy"
    shutil.copytree(finished, legacy)
    (legacy / RUN_MARKER).unlink()  # written by a vsml-es before the marker
    assert holds_run(legacy)  # its checkpoint manifests say so
    code, err = run(capsys, "resume", legacy, "--no-metatest", "--set", "training.generations=3")
    assert code == 0, err
    assert (legacy / RUN_MARKER).is_file()


def test_resume_never_replaces_a_hand_edited_config(finished, tmp_path, capsys):
    for edit, message in ((lambda text: "# my comment\n" + text, "edited by hand"),
                          (lambda text: text.replace("sigma: 0.1", "sigma: 0.5"),
                           "training.sigma: 0.1 (run) -> 0.5 (file)")):
        copy = tmp_path / f"run-{len(message)}"
        shutil.copytree(finished, copy)
        path = copy / "config.yaml"
        path.write_text(edit(path.read_text()))
        before = files(copy)
        code, err = run(capsys, "resume", copy, "--no-metatest")
        assert code == 2 and message in err and "--set KEY=VALUE" in err, err
        assert files(copy) == before


def test_compare_never_trains_into_a_users_directory(tmp_path, capsys):
    out = tmp_path / "cmp"
    (out / "train_vsml").mkdir(parents=True)
    (out / "train_vsml" / "config.yaml").write_text(HAND_WRITTEN)
    before = files(out)
    code, err = run(capsys, "compare", QUICKSTART, *sets(["compare.learners=[vsml]"]),
                    "--out", out)
    assert code == 2 and "holds no vsml-es run" in err, err
    assert files(out) == before


def test_a_diverged_checkpoint_is_skipped_for_the_previous_finite_one(finished, tmp_path,
                                                                     capsys):
    from helpers import poison_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    newest = checkpoint_dirs(copy)[-1][1]
    poison_checkpoint(newest)
    code, err = run(capsys, "resume", copy, "--no-metatest")
    assert code == 0, err
    assert "not finite (NaN or infinity): the run had diverged" in err
    assert "using the previous valid checkpoint" in err
    params, _ = load_params(copy / "params.npz")
    assert all(np.all(np.isfinite(v)) for v in params.values())


def test_a_run_diverged_everywhere_says_how_to_fix_it(finished, tmp_path, capsys):
    from helpers import poison_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    for _, path in checkpoint_dirs(copy):
        poison_checkpoint(path)
    params, meta = load_params(copy / "params.npz")
    np.savez(copy / "params.npz", **{k: np.full_like(v, np.nan) for k, v in params.items()},
             __meta_json__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    before = files(copy)
    code, err = run(capsys, "resume", copy, "--no-metatest")
    assert code == 2 and "diverged" in err and "training.learning_rate" in err, err
    assert "--restart" in err and files(copy) == before
    code, err = run(capsys, "export", copy, "-o", tmp_path / "nan.vsml")
    assert code == 2 and "non-finite" in err and not (tmp_path / "nan.vsml").exists(), err
    code, err = run(capsys, "export", copy, "--checkpoint", str(checkpoint_dirs(copy)[-1][0]),
                    "-o", tmp_path / "nan.vsml")
    assert code == 2 and "diverged" in err and not (tmp_path / "nan.vsml").exists(), err


def test_a_diverging_run_stops_at_its_last_finite_generation(tmp_path):
    import jax.numpy as jnp

    from vsml_es.errors import DivergedError
    from vsml_es.storage.checkpoint import Snapshot, save_checkpoint

    snapshot = Snapshot(generation=4, es_state=None, es_params=None, rng_key=None,
                        mean_params={"w": jnp.array([1.0, jnp.nan])}, info={})
    with pytest.raises(DivergedError, match="training.learning_rate"):
        save_checkpoint(tmp_path, snapshot)
    assert not (tmp_path / "checkpoints").exists()


def test_nan_fitness_is_printed_as_nan(capsys):
    from types import SimpleNamespace

    from vsml_es.commands.train import finish

    result = SimpleNamespace(generation=3, minutes=0.1, final_fitness=float("nan"),
                             summaries=None, run_dir=Path("x"))
    assert finish(lambda: result, Path("x")) == 0
    out = capsys.readouterr().out
    assert "final mean fitness NaN" in out and "0.0000" not in out


def test_an_out_of_memory_error_that_still_happens_names_the_knob(monkeypatch, capsys):
    class XlaRuntimeError(RuntimeError):
        pass

    def exhausted(args):
        raise XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 68719476736 bytes.")

    for command in ("config", "evaluate"):
        parser_args = [command] if command == "config" else [command, "x.vsml"]
        monkeypatch.setattr(cli, "build_parser", _parser_calling(exhausted, parser_args[0]))
        code, err = run(capsys, *parser_args)
        assert code == 2 and "out of memory" in err and "Lower" in err, err
        assert "Traceback" not in err


def _parser_calling(func, command):
    import argparse

    def build():
        parser = argparse.ArgumentParser(prog="vsml-es")
        sub = parser.add_subparsers(dest="command")
        p = sub.add_parser(command)
        p.add_argument("rest", nargs="*")
        p.set_defaults(func=func)
        return parser
    return build


@pytest.mark.parametrize("extra, message", [
    (["training.population_size=1048576"], "lower training.population_size"),
    (["training.population_size=65536", "training.eval_chunk=65536"],
     "lower training.eval_chunk"),
    (["training.generations=10000000", "training.population_size=1048576",
      "task.episode_length=1000000"], "years of compute"),
])
def test_memory_and_time_are_checked_against_this_machine(tmp_path, extra, message):
    result = cli_subprocess("train", QUICKSTART, *sets(extra), "--run-dir", tmp_path / "never")
    err = " ".join(result.stderr.split())
    assert result.returncode == 2 and message in err, result.stderr
    assert "Traceback" not in err and not (tmp_path / "never").exists()


def test_the_memory_limit_is_the_smallest_of_machine_container_and_rlimit(monkeypatch):
    import resource as rlimit

    from vsml_es import resources

    monkeypatch.delenv("VSML_ES_MEMORY_BYTES", raising=False)
    monkeypatch.setattr(rlimit, "getrlimit", lambda which: (3 * 2**30, rlimit.RLIM_INFINITY))
    monkeypatch.setattr(resources, "_address_space_left", lambda: 2**30)
    total, why = resources.available_memory()
    assert total == 2**30 and "ulimit -v" in why
    with pytest.raises(Exception, match="ulimit -v"):
        resources.check_needs([resources.Need(2**31, "x", "knob")], "It")


def test_evaluate_checks_memory_and_time_before_any_output(finished, tmp_path):
    out = tmp_path / "eval"
    for argv, message in (
            (["--dataset", "digits:test@2048x2048"],
             "lower the input size of digits:test@2048x2048"),
            (["--dataset", "digits:test", "--steps", "1000000", "--episodes", "100000"],
             "Lower --steps or --episodes")):
        result = cli_subprocess("evaluate", finished / "params.npz", *argv, "--out", out)
        err = " ".join(result.stderr.split())
        assert result.returncode == 2 and message in err, result.stderr
        assert not out.exists() and result.stdout == ""


def test_sweep_and_compare_seeds_are_bounded(tmp_path, capsys):
    for argv, message in ((["sweep", QUICKSTART, "--seeds", "100000000"], "lower --seeds"),
                          (["sweep", QUICKSTART, "--grid", "training.sigma=.nan,0.1"],
                           "is nan; every number must be finite"),
                          (["compare", QUICKSTART, "--seeds", "100000000"], "lower --seeds")):
        code, err = run(capsys, *argv, "--out", tmp_path / "out")
        assert code == 2 and message in err, err
        assert not (tmp_path / "out").exists()


def test_plot_says_when_metrics_are_not_a_metrics_log(finished, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    (copy / "metrics.jsonl").write_bytes(bytes(range(256)) * 4)
    code, err = run(capsys, "plot", copy, "-o", tmp_path / "p.png")
    assert code == 2 and "not UTF-8 text" in err and "metrics.csv" in err, err
    assert not (tmp_path / "p.png").exists()


def _edited_learner(finished, tmp_path, capsys, edit, signed: bool = False) -> Path:
    """The run's exported learner with its metadata changed by ``edit`` (without the
    metadata_sha256 of newer files unless ``signed``: as an older file would be)."""
    vsml_file = tmp_path / "learner.vsml"
    if not vsml_file.exists():
        assert run(capsys, "export", finished, "-o", vsml_file)[0] == 0
    arrays, info = load_params(vsml_file)
    info = json.loads(json.dumps(info))
    if not signed:
        info.pop("metadata_sha256", None)
    edit(info)
    path = tmp_path / f"edited-{len(list(tmp_path.glob('edited-*')))}.vsml"
    save_params(path, arrays, info)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(num_outputs=2**24 - 1), "num_outputs (16777215"),
    (lambda m: m.update(num_outputs=3), "num_outputs (3"),
    (lambda m: m["input"]["stats"][0].update(std=0.0), "std 0.0"),
    (lambda m: m["input"]["stats"][0].update(std=-1.0), "must be positive"),
    (lambda m: m["input"]["stats"][0].update(mean="1"), "not a number"),
    (lambda m: m["input"].update(example_shape=[-8, -8, 1]), "positive integers"),
    (lambda m: m["input"].update(example_shape=[8, 8, 2]), "does not have the file's 64"),
    (lambda m: m["input"].update(stats={"a": 1}), "not a list"),
    (lambda m: m["model"].update(state_size=8), "model"),
    (lambda m: m["model"].update(output_bound=7.0), "model disagree"),
    (lambda m: m["input"]["preprocess"].update(normalize="example"), "input.preprocess"),
    (lambda m: m.update(per_dataset_outputs=True), "per_dataset_outputs"),
])
def test_learner_file_metadata_is_range_checked(finished, tmp_path, capsys, edit, message):
    from vsml_es.classifier import load_learner
    from vsml_es.errors import LearnerError

    path = _edited_learner(finished, tmp_path, capsys, edit)
    code, err = run(capsys, "evaluate", path, "--out", tmp_path / "out")
    assert code == 2 and message in err and "cannot use" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(LearnerError, match="cannot use"):  # the classifier reads it alike
        load_learner(path)


def test_metadata_of_new_learner_files_is_covered_by_a_checksum(finished, tmp_path, capsys):
    from vsml_es.storage.learner_file import read_learner_file

    path = _edited_learner(finished, tmp_path, capsys,
                           lambda m: m["training"].update(generation=5), signed=True)
    read_learner_file(path)  # provenance is not what runs the parameters
    path = _edited_learner(finished, tmp_path, capsys,
                           lambda m: m["input"]["stats"][0].update(mean=3.0), signed=True)
    code, err = run(capsys, "evaluate", path)
    assert code == 2 and "metadata_sha256" in err, err


def test_learner_files_written_before_the_checks_still_load():
    from vsml_es.storage.learner_file import read_learner_file

    shipped = sorted((Path(__file__).resolve().parents[1] / "docs" / "results").glob("*.vsml"))
    assert shipped
    for path in shipped:
        params, spec = read_learner_file(path)
        assert "metadata_sha256" not in spec.info and spec.num_outputs >= 2
