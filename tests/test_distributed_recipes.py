"""The cluster recipes in cluster/ are valid for the tools that read them (no cloud needed)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vsml_es.config import DistributedConfig

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "onprem.yaml"])
def test_launcher_configs_pass_rays_own_schema(name: str) -> None:
    util = pytest.importorskip("ray.autoscaler._private.util")  # Ray's `ray up` validation
    config = util.prepare_config(copy.deepcopy(yaml.safe_load((CLUSTER / name).read_text())))
    util.validate_config(config)
    commands = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in commands and "--dashboard-host=127.0.0.1" in commands


def test_slurm_script_is_valid_bash_and_runs_the_driver_against_its_head() -> None:
    script = (CLUSTER / "slurm.sbatch").read_text()
    subprocess.run([shutil.which("bash") or "/bin/bash", "-n", str(CLUSTER / "slurm.sbatch")],
                   check=True)
    assert "ray start --head" in script and 'ray start --address="$HEAD_IP:$PORT"' in script
    assert "vsml-es train" in script and "vsml-es resume" in script
    assert "--ray-address" in script


def test_readme_names_only_real_distributed_keys() -> None:
    readme = (CLUSTER / "README.md").read_text()
    named = set(re.findall(r"distributed\.(\w+)", readme))
    assert named and named <= set(DistributedConfig.__dataclass_fields__), named
