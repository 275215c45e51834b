import subprocess
import sys
from pathlib import Path

import dagster as dg

from cogniverse_assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert {sensor.name for sensor in repository.sensor_defs} == {"tenant_discovery_sensor", "trace_threshold_sensor"}
    keys = {key.to_user_string() for key in repository.assets_defs_by_key}
    for module in ("modality", "cross_modal", "routing"):
        assert {f"{module}/routing_traces", f"{module}/synthetic_examples", f"{module}/training_set"} <= keys


def test_dg_check_defs_passes():
    result = subprocess.run([str(Path(sys.executable).with_name("dg")), "check", "defs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
