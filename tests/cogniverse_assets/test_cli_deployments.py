"""Deployment registry and `cogniverse deployments` (no LM needed)."""

import json

import pytest

from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import DeploymentRecord, open_config_store
from cogniverse_assets.cli import main


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    store = open_config_store()
    store.add("acme")
    artifacts = ArtifactStore.from_env()
    for version in ("v1", "v2"):
        artifacts.write_json(artifacts.path("acme", "modality", "modules", f"{version}.json"), {"version": version, "state": {}})
    for version, previous in (("v1", "unoptimized"), ("v2", "v1")):
        store.record_deployment(DeploymentRecord("acme", "modality", version, "promote", "test", score=0.8, previous_version=previous))
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
    store.record_deployment(DeploymentRecord("acme", "routing", "unoptimized", "rollback", "ops", previous_version="v1"))
    assert [r.action for r in store.deployment_history("acme", "routing")] == ["promote", "rollback"]
    assert store.deployed("acme", "routing").version == "unoptimized"
    assert store.deployed("acme", "modality") is None
