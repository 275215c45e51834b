"""Deployment modes, picked by one environment variable: ``COGNIVERSE_DEPLOYMENT=local|k8s``.

- ``local`` (default): steps run as local processes (``multiprocess_executor``; set
  ``COGNIVERSE_STEP_EXECUTION=in_process`` to run them in the run's own process on small
  machines); Phoenix, the LM, the config store and artifacts default to the embedded stack.
- ``k8s``: one Kubernetes pod per step (dagster-k8s ``k8s_job_executor``); every shared service
  comes from the environment and is checked when the definitions load, so a pod that would
  silently fall back to an embedded default fails at once with the list of what is missing.

Where runs are launched and stored (``K8sRunLauncher``, Postgres) is the instance's business
(``dagster.yaml``, written by the Helm chart in ``deploy/``), not the code's.

Resource settings read from the environment (which variable sets which field:
``cogniverse_resources.settings.RESOURCE_ENV``) are passed as ``dg.EnvVar``: the Dagster UI then
shows the variable's name, never its value (LM keys, store URLs with passwords).
"""

import os
from typing import Mapping

import dagster as dg

from cogniverse_resources import settings
from cogniverse_resources.artifacts import ArtifactStore, DSPyModuleIOManager
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.content import ContentBackendResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource

DEPLOYMENT_ENV = "COGNIVERSE_DEPLOYMENT"
STEP_EXECUTION_ENV = "COGNIVERSE_STEP_EXECUTION"
DEPLOYMENTS = ("local", "k8s")

# What a k8s deployment must get from its environment (Helm values / secrets), and why.
K8S_REQUIRED_ENV = {
    "PHOENIX_ENDPOINT": "URL of the shared Phoenix server",
    "COGNIVERSE_ARTIFACTS_URL": "s3://bucket/prefix or gs://bucket/prefix that every pod shares",
    "CONFIG_STORE_URL": "redis://... (or rediss://...) config store that every pod shares",
    "ROUTER_OPTIMIZER_STUDENT_MODEL": "LiteLLM model string of the router LM, e.g. openai/gpt-4o-mini",
}
LOCAL_ARTIFACT_SCHEMES = ("", "file", "local")

# Pod size of an ordinary step (ingestion, blending, planning); the optimizer step asks for more
# through its own ``dagster-k8s/config`` op tag (see assets/trained_module.py).
DEFAULT_STEP_K8S_CONFIG = {
    "container_config": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}},
}


class DeploymentError(ValueError):
    """The environment does not describe a usable deployment."""


def deployment_name(environ: Mapping[str, str] = os.environ) -> str:
    name = (environ.get(DEPLOYMENT_ENV) or "local").strip()
    if name not in DEPLOYMENTS:
        raise DeploymentError(f"{DEPLOYMENT_ENV}={name!r} is not a deployment; use one of {', '.join(DEPLOYMENTS)}")
    return name


def check_k8s_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Raise ``DeploymentError`` naming every missing or unusable setting of a k8s deployment."""
    problems = [f"{var} is not set ({why})" for var, why in K8S_REQUIRED_ENV.items() if not environ.get(var)]
    artifacts = environ.get("COGNIVERSE_ARTIFACTS_URL", "")
    scheme = artifacts.split("://", 1)[0] if "://" in artifacts else ""
    if artifacts and scheme in LOCAL_ARTIFACT_SCHEMES:
        problems.append("COGNIVERSE_ARTIFACTS_URL is a local path; pods do not share a disk, use s3:// or gs://")
    store = environ.get("CONFIG_STORE_URL", "")
    if store and not store.startswith(("redis://", "rediss://")):
        problems.append("CONFIG_STORE_URL must be redis:// or rediss://; a SQLite file is not shared between pods")
    if problems:
        raise DeploymentError(f"{DEPLOYMENT_ENV}=k8s: " + "; ".join(problems))


def resources(environ: Mapping[str, str] = os.environ) -> dict:
    """Every resource, with ``dg.EnvVar(name)`` for each of its variables that is set in ``environ``;
    the others keep the resource's embedded defaults."""

    def configured(resource: type) -> dg.ConfigurableResource | dg.ConfigurableIOManager:
        return resource(**settings.env_vars(resource, environ))

    return {
        "config_store": configured(ConfigStoreResource),
        "phoenix": configured(PhoenixResource),
        "lm": configured(LanguageModelResource),
        "content": configured(ContentBackendResource),
        "artifacts": configured(ArtifactStore),
        "dspy_module_io_manager": configured(DSPyModuleIOManager),
    }


def executor(deployment: str, environ: Mapping[str, str] = os.environ) -> dg.ExecutorDefinition:
    if deployment == "k8s":
        # Imported here: the Kubernetes client takes ~1.5 s to import, paid by every local run
        # worker, code server and CLI call that never launches a pod.
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured({"step_k8s_config": DEFAULT_STEP_K8S_CONFIG}, name="k8s_step_pods")
    mode = (environ.get(STEP_EXECUTION_ENV) or "multiprocess").strip()
    if mode == "in_process":
        return dg.in_process_executor
    if mode != "multiprocess":
        raise DeploymentError(f"{STEP_EXECUTION_ENV}={mode!r}: use multiprocess or in_process")
    return dg.multiprocess_executor


def for_environment(environ: Mapping[str, str] = os.environ) -> tuple[str, dict, dg.ExecutorDefinition]:
    """The deployment named by the environment, its resources and its executor."""
    deployment = deployment_name(environ)
    if deployment == "k8s":
        check_k8s_environment(environ)
    return deployment, resources(environ), executor(deployment, environ)
