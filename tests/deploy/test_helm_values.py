"""deploy/helm/values.yaml against the chart's schema (the subset we use) and the instance config
the chart renders from it against Dagster's own config schemas."""

import copy

import jsonschema
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from tests.deploy.chart import VALUES_FILE, VALUES_SCHEMA, load_values, render_instance


def test_values_match_the_chart_schema():
    jsonschema.validate(load_values(), VALUES_SCHEMA)


@pytest.mark.parametrize(
    "path, value",
    [
        (("runLauncher", "config", "k8sRunLauncher", "envSecret"), [{"name": "x"}]),  # typo of envSecrets
        (("runLauncher", "type"), "K8sLauncher"),
        (
            ("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator", "tagConcurrencyLimits"),
            [{"key": "tenant", "limit": "one"}],
        ),
    ],
)
def test_schema_check_rejects_broken_values(path, value):
    values = copy.deepcopy(load_values())
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, VALUES_SCHEMA)


def test_rendered_instance_is_valid_dagster_config(tmp_path):
    instance = render_instance(load_values())
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    dagster_instance_config(str(tmp_path))  # raises on an invalid instance file
    for section, cls in (("run_launcher", K8sRunLauncher), ("run_coordinator", QueuedRunCoordinator)):
        result = validate_config(cls.config_type(), instance[section]["config"])
        assert result.success, [error.message for error in result.errors]
    for section, cls in (
        ("run_storage", PostgresRunStorage),
        ("event_log_storage", PostgresEventLogStorage),
        ("schedule_storage", PostgresScheduleStorage),
    ):
        result = validate_config(cls.config_type(), instance[section]["config"])
        assert result.success, [error.message for error in result.errors]


def test_one_run_per_tenant_and_shared_settings_everywhere():
    values = load_values()
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["env"]["COGNIVERSE_DEPLOYMENT"] == "k8s"
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "cogniverse_assets.definitions"]
    for pod in (
        deployment,
        values["dagsterWebserver"],
        values["dagsterDaemon"],
        values["runLauncher"]["config"]["k8sRunLauncher"],
    ):
        assert {"name": "cogniverse-secrets"} in pod["envSecrets"]
        assert {"name": "cogniverse-settings"} in pod["envConfigMaps"]


def test_values_hold_no_secret_values():
    values = load_values()
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    text = VALUES_FILE.read_text()
    for marker in ("sk-", "password=", "://dagster:", "AKIA"):
        assert marker not in text
