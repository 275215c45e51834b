"""What the official Dagster Helm chart does with deploy/helm/values.yaml, for the parts we set.

``helm`` is not installable on the test machines, so the chart is represented by (1) a JSON schema
for the subset of its ``values.schema.json`` that our values touch — the same required keys,
enums and closed objects (``additionalProperties: false``) — and (2) ``render_instance``, the
instance ``dagster.yaml`` its templates write from those values (run launcher, run coordinator,
Postgres storage). The rendered instance is then validated by Dagster's own config schemas.
With helm available, ``helm template ... -f deploy/helm/values.yaml`` checks the same file.
"""

from pathlib import Path

import yaml

VALUES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "values.yaml"

_named_list = {
    "type": "array",
    "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
}
_env = {
    "oneOf": [
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "array", "items": {"type": "object"}},
    ]
}
_image = {
    "type": "object",
    "required": ["repository", "pullPolicy"],
    "properties": {
        "repository": {"type": "string"},
        "tag": {"type": ["string", "integer", "null"]},
        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    },
}
_tag_limit = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "limit"],
    "properties": {
        "key": {"type": "string"},
        "limit": {"type": "integer"},
        "value": {
            "oneOf": [
                {"type": ["string", "null"]},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["applyLimitPerUniqueValue"],
                    "properties": {"applyLimitPerUniqueValue": {"type": "boolean"}},
                },
            ]
        },
    },
}
_pod_env = {"envConfigMaps": _named_list, "envSecrets": _named_list, "env": _env}

VALUES_SCHEMA = {
    "type": "object",
    "properties": {
        "global": {
            "type": "object",
            "properties": {"postgresqlSecretName": {"type": "string"}, "serviceAccountName": {"type": "string"}},
        },
        "dagster-user-deployments": {
            "type": "object",
            "required": ["enabled", "enableSubchart", "deployments"],
            "properties": {
                "enabled": {"type": "boolean"},
                "enableSubchart": {"type": "boolean"},
                "deployments": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "image", "port"],
                        "properties": {
                            "name": {"type": "string"},
                            "image": _image,
                            "port": {"type": "integer"},
                            "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
                            "includeConfigInLaunchedRuns": {
                                "type": "object",
                                "required": ["enabled"],
                                "properties": {"enabled": {"type": "boolean"}},
                            },
                            "resources": {"type": "object"},
                            **_pod_env,
                        },
                    },
                },
            },
        },
        "dagsterWebserver": {"type": "object", "properties": _pod_env},
        "dagsterDaemon": {
            "type": "object",
            "properties": {
                **_pod_env,
                "runCoordinator": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["enabled", "type", "config"],
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
                        "config": {
                            "type": "object",
                            "properties": {
                                "queuedRunCoordinator": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "maxConcurrentRuns": {"type": ["integer", "null"]},
                                        "tagConcurrencyLimits": {"type": "array", "items": _tag_limit},
                                        "dequeueIntervalSeconds": {"type": ["integer", "null"]},
                                        "dequeueUseThreads": {"type": "boolean"},
                                        "dequeueNumWorkers": {"type": ["integer", "null"]},
                                    },
                                }
                            },
                        },
                    },
                },
            },
        },
        "runLauncher": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "config"],
            "properties": {
                "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
                "config": {
                    "type": "object",
                    "properties": {
                        "k8sRunLauncher": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": [
                                "imagePullPolicy",
                                "loadInclusterConfig",
                                "envConfigMaps",
                                "envSecrets",
                                "envVars",
                                "volumeMounts",
                                "volumes",
                            ],
                            "properties": {
                                "image": {"oneOf": [_image, {"type": "null"}]},
                                "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                                "loadInclusterConfig": {"type": "boolean"},
                                "jobNamespace": {"type": ["string", "null"]},
                                "envConfigMaps": _named_list,
                                "envSecrets": _named_list,
                                "envVars": {"type": "array", "items": {"type": "string"}},
                                "volumeMounts": {"type": "array"},
                                "volumes": {"type": "array"},
                                "labels": {"type": "object"},
                                "resources": {"type": "object"},
                                "failPodOnRunFailure": {"type": "boolean"},
                                "runK8sConfig": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        name: {"type": "object"}
                                        for name in (
                                            "containerConfig",
                                            "podSpecConfig",
                                            "podTemplateSpecMetadata",
                                            "jobSpecConfig",
                                            "jobMetadata",
                                        )
                                    },
                                },
                            },
                        }
                    },
                },
            },
        },
        "generatePostgresqlPasswordSecret": {"type": "boolean"},
        "postgresql": {
            "type": "object",
            "required": [
                "enabled",
                "postgresqlHost",
                "postgresqlUsername",
                "postgresqlPassword",
                "postgresqlDatabase",
                "postgresqlParams",
                "service",
            ],
            "properties": {
                "enabled": {"type": "boolean"},
                "postgresqlHost": {"type": "string"},
                "postgresqlUsername": {"type": "string"},
                "postgresqlPassword": {"type": "string"},
                "postgresqlDatabase": {"type": "string"},
                "postgresqlParams": {"type": "object"},
                "service": {"type": "object", "required": ["port"], "properties": {"port": {"type": "integer"}}},
            },
        },
        "telemetry": {"type": "object", "additionalProperties": False, "properties": {"enabled": {"type": "boolean"}}},
    },
}


def load_values(path: Path = VALUES_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def fullname(release: str) -> str:
    return f"{release}-dagster"


def render_instance(values: dict, release: str = "cogniverse", namespace: str = "cogniverse") -> dict:
    """The instance ``dagster.yaml`` the chart's configmap holds for these values."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_launcher_config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or namespace,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": values.get("global", {}).get("serviceAccountName") or fullname(release),
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{fullname(release)}-instance",
        "postgres_password_secret": values.get("global", {}).get("postgresqlSecretName")
        or f"{fullname(release)}-postgresql-secret",
        "env_config_maps": [item["name"] for item in launcher["envConfigMaps"]],
        "env_secrets": [item["name"] for item in launcher["envSecrets"]],
        "env_vars": launcher["envVars"],
        "run_k8s_config": {_snake(key): value for key, value in launcher.get("runK8sConfig", {}).items()},
    }
    coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    postgres = values["postgresql"]
    db = {
        "username": postgres["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": postgres["postgresqlHost"],
        "db_name": postgres["postgresqlDatabase"],
        "port": postgres["service"]["port"],
        "params": postgres["postgresqlParams"],
    }
    instance = {
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": run_launcher_config},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": coordinator.get("maxConcurrentRuns", -1),
                "tag_concurrency_limits": coordinator.get("tagConcurrencyLimits", []),
            },
        },
        "telemetry": {"enabled": values.get("telemetry", {}).get("enabled", True)},
    }
    for storage, cls in (
        ("run_storage", "PostgresRunStorage"),
        ("event_log_storage", "PostgresEventLogStorage"),
        ("schedule_storage", "PostgresScheduleStorage"),
    ):
        instance[storage] = {"module": "dagster_postgres", "class": cls, "config": {"postgres_db": db}}
    return instance
