"""``<module>/deployment`` follows the deployment pointer, not a stale ``evaluation.json`` (no LM needed:
the evaluation record is written directly)."""

from datetime import datetime, timedelta, timezone

import pytest

from cogniverse_assets.assets.deployment import deployment_assets
from cogniverse_assets.assets.evaluation import evaluation_path
from cogniverse_assets.cli import main
from cogniverse_assets.records import EvaluationRecord
from cogniverse_resources.config_store import DeploymentRecord

MODALITY_DEPLOYMENT = deployment_assets[0]


def _evaluation(env, tenant, candidate, baseline, promote=True, at=None):
    record = EvaluationRecord(
        tenant_id=tenant,
        module="modality",
        candidate_version=candidate,
        deployed_version=baseline,
        candidate={"accuracy": 0.9},
        deployed={"accuracy": 0.7},
        promote=promote,
        reasons=["candidate gains 0.20 accuracy"],
        figures={},
        validation_size=40,
        evaluated_at=(at or datetime.now(timezone.utc)).isoformat(),
    )
    env.artifacts.write_json(evaluation_path(env.artifacts, tenant, "modality"), record.model_dump())
    return record


def _store_versions(env, tenant, *versions):
    for version in versions:
        env.artifacts.write_json(
            env.artifacts.path(tenant, "modality", "modules", f"{version}.json"), {"version": version, "state": {}}
        )


def _failure(result) -> str:
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert not any(event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events)
    return str(failure.event_specific_data.error)


@pytest.fixture
def cli_env(tenant_env, monkeypatch):
    """The CLI pointed at the test's config store and artifacts."""
    monkeypatch.setenv("CONFIG_STORE_URL", tenant_env.config_store.url)
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tenant_env.artifacts.root))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tenant_env


def test_a_passed_evaluation_is_deployed(tenant_env):
    tenant = tenant_env.add("deploy")
    store = tenant_env.config_store.store()
    store.record_deployment(
        DeploymentRecord(
            tenant,
            "modality",
            "v1",
            "promote",
            "test",
            at=(datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(),
        )
    )
    _evaluation(tenant_env, tenant, "v2", "v1")
    result = tenant_env.materialize([MODALITY_DEPLOYMENT], tenant)
    (event,) = result.asset_materializations_for_node(MODALITY_DEPLOYMENT.op.name)
    assert {key: event.metadata[key].value for key in ("deployed_version", "previous_version", "action")} == {
        "deployed_version": "v2",
        "previous_version": "v1",
        "action": "promote",
    }
    assert store.deployed(tenant, "modality").version == "v2"


def test_materializing_deployment_after_a_rollback_refuses(cli_env):
    tenant = cli_env.add("rolled")
    store = cli_env.config_store.store()
    _store_versions(cli_env, tenant, "v1", "v2")
    _evaluation(cli_env, tenant, "v2", "unoptimized")
    assert cli_env.materialize([MODALITY_DEPLOYMENT], tenant).success
    assert store.deployed(tenant, "modality").version == "v2"

    assert main(["deployments", "rollback", "--tenant", tenant, "--module", "modality"]) == 0
    assert store.deployed(tenant, "modality").version == "unoptimized"
    # evaluation.json still says "promote v2 over unoptimized", and unoptimized is deployed again;
    # the rollback came after the evaluation, so it wins.
    error = _failure(cli_env.materialize([MODALITY_DEPLOYMENT], tenant, raise_on_error=False))
    assert "refusing to deploy modality v2" in error and "rollback to unoptimized" in error
    assert store.deployed(tenant, "modality").version == "unoptimized"
    assert [record.action for record in store.deployment_history(tenant, "modality")] == ["promote", "rollback"]


def test_an_evaluation_against_a_version_no_longer_deployed_is_not_deployed(tenant_env):
    tenant = tenant_env.add("stale")
    store = tenant_env.config_store.store()
    _evaluation(tenant_env, tenant, "v2", "unoptimized", at=datetime.now(timezone.utc) - timedelta(hours=1))
    store.record_deployment(DeploymentRecord(tenant, "modality", "v1", "promote", "another run"))
    error = _failure(tenant_env.materialize([MODALITY_DEPLOYMENT], tenant, raise_on_error=False))
    assert "compared v2 against unoptimized, but v1 is deployed now" in error
    assert store.deployed(tenant, "modality").version == "v1"


def test_a_failed_gate_is_never_deployed(tenant_env):
    tenant = tenant_env.add("gate")
    _evaluation(tenant_env, tenant, "v2", "unoptimized", promote=False)
    assert "did not pass the promotion gate" in _failure(
        tenant_env.materialize([MODALITY_DEPLOYMENT], tenant, raise_on_error=False)
    )
    assert tenant_env.config_store.store().deployed(tenant, "modality") is None
