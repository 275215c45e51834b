import subprocess
import sys
from pathlib import Path

import dagster as dg

from cogniverse_assets.assets.evaluation import evaluation_assets
from cogniverse_assets.assets.optimization_plan import optimization_plan_assets
from cogniverse_assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    # meta_model_sensor (running by default) retrains optimizer_meta_model; no automation condition
    # whose sensor would ship stopped.
    assert {sensor.name for sensor in repository.sensor_defs} == {
        "tenant_discovery_sensor",
        "trace_threshold_sensor",
        "lane_failure_sensor",
        "meta_model_sensor",
    }
    keys = {key.to_user_string() for key in repository.assets_defs_by_key}
    for module in ("modality", "cross_modal", "routing"):
        stages = (
            "llm_annotations",
            "routing_traces",
            "synthetic_examples",
            "training_set",
            "optimization_plan",
            "trained_module",
            "evaluation",
            "deployment",
        )
        assert {f"{module}/{stage}" for stage in stages} <= keys
    assert "optimizer_meta_model" in keys
    # one blocking promotion gate per module, declared on (and decided by) its evaluation asset, and
    # one non-blocking freshness check per module, partitioned by tenant, on its plan
    checks = {key.to_user_string() for key in repository.asset_graph.asset_check_keys}
    modules = ("modality", "cross_modal", "routing")
    assert checks == {f"{module}/evaluation:promotion_gate" for module in modules} | {
        f"{module}/optimization_plan:lane_freshness" for module in modules
    }
    assert all(spec.blocking for asset in evaluation_assets for spec in asset.check_specs)
    assert all(
        not spec.blocking and spec.partitions_def.name == "tenants"
        for asset in optimization_plan_assets
        for spec in asset.check_specs
    )
    job = defs.resolve_job_def("optimize_tenant")
    assert job.partitions_def.name == "tenants"
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        f"{module}/{stage}" for module in ("modality", "cross_modal", "routing") for stage in stages
    }


def test_dg_check_defs_passes():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
