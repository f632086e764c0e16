"""Every config mistake is caught before work starts, with a one-paragraph message and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsml_es.cli import main
from vsml_es.config import load_config
from vsml_es.errors import ConfigError
from vsml_es.experiment import load_experiment, validate

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, " ".join(captured.err.split())  # the CLI wraps long messages


@pytest.mark.parametrize(
    "override,expected",
    [
        ("training.populaton_size=64", ["Unknown config key 'training.populaton_size'",
                                        "Did you mean 'training.population_size'"]),
        ("trainng.sigma=0.1", ["Unknown config key 'trainng.sigma'", "'training.sigma'"]),
        ("training.population_size=abc", ["'training.population_size' expects int", "str"]),
        ("model.backward_pass=3", ["'model.backward_pass' expects bool"]),
        ("training.population_size=63", ["needs an even population", "64 or 62"]),
        ("training.population_size=0", ["'training.population_size' must be positive"]),
        ("task.episode_length=-5", ["'task.episode_length' must be positive"]),
        ("training.sigma=0", ["'training.sigma' must be positive"]),
        ("training.strategy=OpenES", ["Unknown ES strategy 'OpenES'", "Did you mean 'Open_ES'",
                                      "SNES", "CMA_ES"]),
        ("task.fitness=best", ["'task.fitness' is 'best'", "mean_loss, last_loss"]),
        ("training.strategy_kwargs={bogus: 1}", ["does not accept", "bogus"]),
        ("model.state_size=15", ["'model.state_size' must be even"]),
        # conv VSML layers (issue 13 item 5)
        ("model.conv_layers=[{channels: 4, kernel: 4}]",
         ["'model.conv_layers[0].kernel' is 4", "odd kernel"]),
        ("model.conv_layers=[{channels: 4, stride: 0}]",
         ["'model.conv_layers[0].stride' must be positive"]),
        ("model.conv_layers=[{chanels: 4}]",
         ["Unknown config key 'model.conv_layers[0].chanels'", "Did you mean 'channels'"]),
        ("model.conv_layers=[8]", ["'model.conv_layers[0]' must be a mapping", "channels"]),
        ("model.conv_layers=[{channels: 0}]", ["'model.conv_layers[0].channels' must be"]),
        ("model.conv_backward=exact", ["'model.conv_backward' is 'exact'", "official, full"]),
        ("task.dataset=mnist1d", ["model.conv_layers needs image-shaped data",
                                  "'mnist1d' (task.dataset)", "shape (40,)"]),
    ],
)
def test_config_errors_exit_2_with_clear_message(capsys, override: str, expected: list[str]):
    conv = ["--set", "model.conv_layers=[{channels: 2}]"] if override.startswith("task.") else []
    code, err = run_cli(capsys, "train", str(QUICKSTART), *conv, "--set", override)
    assert code == 2
    assert err.startswith("error: ")
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for text in expected:
        assert text in flat, (text, flat)


def test_missing_experiment_file(capsys, tmp_path: Path):
    code, err = run_cli(capsys, "train", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err


def test_bad_yaml_and_bad_section(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)
    bad.write_text("training: 5\n")
    with pytest.raises(ConfigError, match="'training' must be a mapping"):
        load_experiment(bad)


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_experiment(QUICKSTART, ["training.population_size"])


def test_yaml_then_overrides_then_types():
    config = load_experiment(QUICKSTART, ["training.sigma=1", "model.hidden_layers=[8, 4]"])
    assert config.training.sigma == 1.0 and isinstance(config.training.sigma, float)
    assert config.model.hidden_layers == (8, 4)
    assert config.training.population_size == 64  # from the YAML file
    assert config.metatest.episodes == 32


def test_odd_population_fine_for_non_antithetic_strategy():
    config = load_experiment(None, ["training.strategy=SNES", "training.population_size=7"])
    assert config.training.population_size == 7


def test_pair_rank_shaping_needs_a_mirrored_strategy():
    with pytest.raises(ConfigError, match="does not sample mirrored pairs"):
        load_experiment(None, ["training.strategy=SNES", "training.fitness_shaping=pair_rank"])
    assert load_experiment(QUICKSTART, ["training.fitness_shaping=pair_rank"])


def test_an_experiment_extends_another_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: base\ntraining: {sigma: 0.3, population_size: 32}\ntask: {dataset: random}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cell.yaml").write_text(
        "extends: ../base.yaml\nname: cell\ntraining: {sigma: 0.2}\n")
    config = load_experiment(tmp_path / "sub" / "cell.yaml", ["training.generations=7"])
    assert config.name == "cell" and config.task.dataset == "random"
    assert (config.training.sigma, config.training.population_size,
            config.training.generations) == (0.2, 32, 7)


def test_an_extends_loop_or_missing_base_is_a_config_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="in a loop"):
        load_experiment(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml' does not exist"):
        load_experiment(tmp_path / "c.yaml")


@pytest.mark.parametrize("path", sorted(Path(QUICKSTART).parent.rglob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_experiment_validates(path):
    raw = load_config(path)
    # A later phase of a recipe starts from the run its run.sh made of the phase before it.
    from_a_run = raw.training.init_params.startswith("runs/")
    config = validate(raw, check_warm_start=not from_a_run)
    if from_a_run:
        previous = f"phase{int(path.stem.removeprefix('phase')) - 1}"
        run = f"runs/{path.parent.name}-seed{{seed}}/{previous}"
        assert raw.training.init_params == f"{run}/params.npz"
        assert (path.parent / "run.sh").is_file() and (path.parent / f"{previous}.yaml").is_file()
    if path.parent.name == "datasets" and path.name != "base.yaml":  # a grid cell
        assert config.name.startswith("datasets-") and config.task.num_classes == 62
        assert config.training.population_size == 2048
        assert (config.task.dataset != "digits") or config.task.mixture


def test_conv_layers_parse_and_round_trip():
    """model.conv_layers is a list of mappings; a stored config reads back the same."""
    from vsml_es.config import ConvLayerConfig, config_from_dict, config_to_dict
    from vsml_es.errors import DatasetError

    config = load_experiment(QUICKSTART, ["model.conv_layers=[{channels: 4, stride: 2}, "
                                          "{channels: 2, kernel: 5}]"])
    assert config.model.conv_layers == (ConvLayerConfig(4, 3, 2), ConvLayerConfig(2, 5, 1))
    assert config_from_dict(config_to_dict(config)) == config
    hash(config.model)  # a jit static argument
    with pytest.raises(ConfigError, match="conv layers are VSML layers"):
        load_experiment(QUICKSTART, ["model.conv_layers=[{channels: 2}]",
                                     "model.learner=hebbian"])
    with pytest.raises(DatasetError, match="metatest.datasets\\[0\\]"):
        load_experiment(QUICKSTART, ["model.conv_layers=[{channels: 2}]",
                                     "metatest.datasets=[mnist1d:test]"])
