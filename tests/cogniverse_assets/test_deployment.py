"""Deployment modes: the variable, the k8s environment check, EnvVar-wrapped settings."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from cogniverse_assets.deployment import (
    DeploymentError,
    check_k8s_environment,
    deployment_name,
    executor,
    for_environment,
    resources,
)
from cogniverse_resources.stack import REPO_ROOT

K8S_ENV = {
    "COGNIVERSE_DEPLOYMENT": "k8s",
    "PHOENIX_ENDPOINT": "http://phoenix:6006",
    "COGNIVERSE_ARTIFACTS_URL": "s3://bucket/prefix",
    "CONFIG_STORE_URL": "redis://:hunter2@redis:6379/0",
    "ROUTER_OPTIMIZER_STUDENT_MODEL": "openai/gpt-4o-mini",
}


def test_local_is_the_default_and_unknown_names_are_rejected():
    assert deployment_name({}) == "local"
    assert deployment_name({"COGNIVERSE_DEPLOYMENT": " k8s "}) == "k8s"
    with pytest.raises(DeploymentError, match="'cloud' is not a deployment"):
        deployment_name({"COGNIVERSE_DEPLOYMENT": "cloud"})


def test_k8s_names_every_missing_setting_at_once():
    with pytest.raises(DeploymentError) as caught:
        check_k8s_environment({"COGNIVERSE_DEPLOYMENT": "k8s"})
    for variable in (
        "PHOENIX_ENDPOINT",
        "COGNIVERSE_ARTIFACTS_URL",
        "CONFIG_STORE_URL",
        "ROUTER_OPTIMIZER_STUDENT_MODEL",
    ):
        assert variable in str(caught.value)
    check_k8s_environment(K8S_ENV)


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("COGNIVERSE_ARTIFACTS_URL", "/data/artifacts", "local path"),
        ("COGNIVERSE_ARTIFACTS_URL", "file:///data/artifacts", "local path"),
        ("CONFIG_STORE_URL", "sqlite:///data/config.sqlite", "SQLite"),
    ],
)
def test_k8s_rejects_storage_pods_cannot_share(variable, value, message):
    with pytest.raises(DeploymentError, match=message):
        check_k8s_environment({**K8S_ENV, variable: value})


def test_settings_from_the_environment_are_env_vars_not_values():
    built = resources({**K8S_ENV, "ROUTER_OPTIMIZER_STUDENT_KEY": "sk-live-123"})
    lm, store = built["lm"], built["config_store"]
    # What Dagster shows in the UI and stores with runs is the variable, not its value.
    assert lm.student_api_key == dg.EnvVar("ROUTER_OPTIMIZER_STUDENT_KEY")
    assert store.url == dg.EnvVar("CONFIG_STORE_URL")
    assert built["artifacts"].root == dg.EnvVar("COGNIVERSE_ARTIFACTS_URL")
    assert "sk-live-123" not in repr(built) and "hunter2" not in repr(built)
    # Unset variables keep the embedded defaults.
    assert resources({})["lm"].student_api_key is None


def test_step_execution_modes():
    assert executor("local", {"COGNIVERSE_STEP_EXECUTION": "in_process"}).name == "in_process"
    assert executor("k8s", {}).name == "k8s_step_pods"
    with pytest.raises(DeploymentError, match="multiprocess or in_process"):
        executor("local", {"COGNIVERSE_STEP_EXECUTION": "threads"})
    name, _, chosen = for_environment(K8S_ENV)
    assert (name, chosen.name) == ("k8s", "k8s_step_pods")


def test_definitions_refuse_to_load_for_k8s_without_its_services():
    env = {key: value for key, value in os.environ.items() if key not in K8S_ENV}
    result = subprocess.run(
        [sys.executable, "-c", "import cogniverse_assets.definitions"],
        cwd=REPO_ROOT,
        env={**env, "COGNIVERSE_DEPLOYMENT": "k8s"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "DeploymentError" in result.stderr and "PHOENIX_ENDPOINT is not set" in result.stderr
