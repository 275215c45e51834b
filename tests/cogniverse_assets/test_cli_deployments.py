"""Deployment registry and `cogniverse deployments` (no LM needed)."""

import json

import pytest

from cogniverse_assets.cli import main
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import DeploymentRecord, open_config_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # never report to a developer's instance
    store = open_config_store()
    store.add("acme")
    artifacts = ArtifactStore.from_env()
    for version in ("v1", "v2"):
        artifacts.write_json(
            artifacts.path("acme", "modality", "modules", f"{version}.json"), {"version": version, "state": {}}
        )
    for version, previous in (("v1", "unoptimized"), ("v2", "v1")):
        store.record_deployment(
            DeploymentRecord("acme", "modality", version, "promote", "test", score=0.8, previous_version=previous)
        )
    return store


def test_rollback_moves_the_pointer_back_and_is_recorded(store, capsys):
    assert main(["deployments", "rollback", "--tenant", "acme", "--module", "modality"]) == 0
    assert "v2 -> v1" in capsys.readouterr().out
    assert store.deployed("acme", "modality").version == "v1"
    assert main(["deployments", "show", "--tenant", "acme", "--module", "modality"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["action"]) for r in history] == [("v1", "promote"), ("v2", "promote"), ("v1", "rollback")]


def test_rollback_to_a_named_version_or_unoptimized(store, capsys):
    assert main(["deployments", "rollback", "--tenant", "acme", "--module", "modality", "--to", "unoptimized"]) == 0
    assert store.deployed("acme", "modality").version == "unoptimized"
    assert main(["deployments", "list", "--tenant", "acme"]) == 0
    assert "modality     unoptimized" in capsys.readouterr().out


def test_rollback_to_a_missing_version_changes_nothing(store, capsys):
    assert main(["deployments", "rollback", "--tenant", "acme", "--module", "modality", "--to", "v9"]) == 2
    assert "v9" in capsys.readouterr().err
    assert store.deployed("acme", "modality").version == "v2"


def test_registry_on_redis(redis_url):
    import uuid

    from cogniverse_resources.config_store import RedisConfigStore

    store = RedisConfigStore(redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    store.record_deployment(DeploymentRecord("acme", "routing", "v1", "promote", "test"))
    store.record_deployment(
        DeploymentRecord("acme", "routing", "unoptimized", "rollback", "ops", previous_version="v1")
    )
    assert [r.action for r in store.deployment_history("acme", "routing")] == ["promote", "rollback"]
    assert store.deployed("acme", "routing").version == "unoptimized"
    assert store.deployed("acme", "modality") is None


def _rollback(*extra):
    return main(["deployments", "rollback", "--tenant", "acme", "--module", "modality", *extra])


def test_a_second_rollback_walks_further_back_instead_of_flip_flopping(store, capsys):
    artifacts = ArtifactStore.from_env()
    artifacts.write_json(artifacts.path("acme", "modality", "modules", "v3.json"), {"version": "v3", "state": {}})
    store.record_deployment(DeploymentRecord("acme", "modality", "v3", "promote", "test", previous_version="v2"))
    assert _rollback() == 0  # v3 -> v2
    assert _rollback() == 0  # v2 -> v1, not back to v3 (rolled back from)
    assert store.deployed("acme", "modality").version == "v1"
    assert _rollback() == 0  # v1 -> unoptimized
    assert store.deployed("acme", "modality").version == "unoptimized"
    capsys.readouterr()
    # Every earlier version was rolled back from: a default rollback refuses and changes nothing.
    assert _rollback() == 2
    assert "name one with --to" in capsys.readouterr().err
    assert store.deployed("acme", "modality").version == "unoptimized"
    # --to still deploys any stored version, also one that was rolled back from.
    assert _rollback("--to", "v3") == 0
    assert store.deployed("acme", "modality").version == "v3"
    history = store.deployment_history("acme", "modality")
    assert [(r.previous_version, r.version) for r in history if r.action == "rollback"] == [
        ("v3", "v2"),
        ("v2", "v1"),
        ("v1", "unoptimized"),
        ("unoptimized", "v3"),
    ]


def test_two_rollbacks_from_a_promotion_do_not_redeploy_the_rolled_back_version(store, capsys):
    assert _rollback() == 0  # v2 -> v1
    assert _rollback() == 0  # v1 -> unoptimized (v2 was rolled back from)
    assert store.deployed("acme", "modality").version == "unoptimized"


def test_nothing_deployed_means_nothing_to_roll_back(store, capsys):
    assert main(["deployments", "rollback", "--tenant", "acme", "--module", "routing"]) == 2
    assert "nothing to roll back" in capsys.readouterr().err
    assert store.deployed("acme", "routing") is None


def test_a_rollback_is_reported_to_dagster_when_dagster_home_is_set(store, tmp_path, monkeypatch, capsys):
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("USER", "ops-alice")
    assert _rollback("--reason", "bad answers on sports queries") == 0
    assert "reported to Dagster" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["modality", "deployment"]), asset_partitions=["acme"]),
            limit=10,
        ).records
    (record,) = records
    materialization = record.asset_materialization
    assert materialization.partition == "acme"
    assert {key: value.value for key, value in materialization.metadata.items() if key != "at"} == {
        "deployed_version": "v1",
        "previous_version": "v2",
        "action": "rollback",
        "actor": "ops-alice",
        "reason": "bad answers on sports queries",
    }


def test_without_dagster_home_the_rollback_is_recorded_in_the_store_only(store, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert _rollback() == 0
    assert "DAGSTER_HOME is not set" in capsys.readouterr().out
    assert store.deployed("acme", "modality").version == "v1"


def test_rollback_help_explains_the_default_target_and_dagster(capsys):
    with pytest.raises(SystemExit):
        main(["deployments", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "not itself rolled back from" in text and "DAGSTER_HOME" in text
