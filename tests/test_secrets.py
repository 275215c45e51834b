"""Secrets — LM keys, the Phoenix key, a config store URL with a password — never reach logs, run
configs, job snapshots, event metadata or artifacts, over a whole modality lane with the real
local LM, a password-protected Redis config store and the resources the definitions use."""

import logging

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from cogniverse_assets.assets.deployment import deployment_assets
from cogniverse_assets.assets.evaluation import evaluation_assets
from cogniverse_assets.assets.optimization_plan import optimization_plan_assets
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets
from cogniverse_assets.assets.trained_module import trained_module_assets
from cogniverse_assets.assets.training_set import training_set_assets
from cogniverse_assets.deployment import resources
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources.config_store import open_config_store
from tests.conftest import private_redis

pytestmark = pytest.mark.lm

SECRETS = {
    "ROUTER_OPTIMIZER_STUDENT_KEY": "sk-student-7Qx9SECRET",
    "ROUTER_OPTIMIZER_TEACHER_KEY": "sk-teacher-3Lm2SECRET",
    "PHOENIX_API_KEY": "phx-4Kd8SECRET",
}
REDIS_PASSWORD = "redis-pw-9Zt1SECRET"
LANE = [
    group[0]
    for group in (
        routing_traces_assets,
        synthetic_examples_assets,
        training_set_assets,
        optimization_plan_assets,
        trained_module_assets,
        evaluation_assets,
        deployment_assets,
    )
]


@pytest.fixture
def redis_with_password(tmp_path):
    with private_redis(tmp_path, password=REDIS_PASSWORD) as url:
        yield url


def test_no_secret_in_logs_metadata_or_artifacts(
    phoenix, local_lm, redis_with_password, tmp_path, monkeypatch, caplog, capfd
):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONFIG_STORE_URL", redis_with_password)
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    caplog.set_level(logging.DEBUG)
    built = resources()
    tenant = "secrets-a"
    open_config_store().add(
        tenant, use_synthetic_data=False, preferred_optimizer="bootstrap", max_training_iterations=10
    )
    emit_traffic(phoenix, tenant, n=40, feedback_rate=1.0, accuracy=0.75, seed=51, progress=False, modules=["modality"])

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions(tenants_partitions.name, [tenant])
        # Whether the candidate is promoted does not matter here (a refused deployment fails its step).
        result = dg.materialize(LANE, partition_key=tenant, instance=instance, resources=built, raise_on_error=False)
        assert result.asset_materializations_for_node(trained_module_assets[0].op.name)  # the LM really ran
        assert result.asset_materializations_for_node(evaluation_assets[0].op.name)
        run = instance.get_run_by_id(result.run_id)
        surfaces = {
            "event log": "\n".join(serialize_value(entry) for entry in instance.all_logs(result.run_id)),
            "run config": serialize_value(run.run_config),
            "job snapshot": serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
        }
    surfaces["python logs"] = "\n".join(f"{record.name} {record.getMessage()}" for record in caplog.records)
    captured = capfd.readouterr()
    surfaces["stdout/stderr"] = captured.out + captured.err
    surfaces["dagster files"] = "\n".join(
        path.read_text(errors="replace")
        for path in (tmp_path / "dagster").rglob("*")
        if path.is_file() and path.suffix != ".db"
    )
    surfaces["artifacts"] = "\n".join(
        path.read_bytes().decode(errors="replace") for path in (tmp_path / "artifacts").rglob("*") if path.is_file()
    )

    assert all(surfaces.values())
    for secret in [*SECRETS.values(), REDIS_PASSWORD]:
        leaks = [name for name, text in surfaces.items() if secret in text]
        assert not leaks, f"{secret} leaked into {leaks}"
