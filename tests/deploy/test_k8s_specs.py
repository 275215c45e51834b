"""The Kubernetes Jobs dagster-k8s would submit for our steps, built with dagster-k8s's own
functions the way its step handler does (run launcher context, then the executor's step config,
then the step's ``dagster-k8s/config`` tag), with the run launcher configured from the instance
config the Helm chart renders. No cluster: only the specs are built, never submitted."""

import dagster as dg
import pytest
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig, construct_dagster_k8s_job, get_user_defined_k8s_config
from kubernetes.client import ApiClient

from cogniverse_assets.deployment import DEFAULT_STEP_K8S_CONFIG, executor
from tests.deploy.chart import load_values, render_instance

IMAGE = "registry.example.com/cogniverse-auto-optimization:0.1.0"
K8S_ENV = {
    "COGNIVERSE_DEPLOYMENT": "k8s",
    "PHOENIX_ENDPOINT": "http://phoenix.observability:6006",
    "COGNIVERSE_ARTIFACTS_URL": "s3://cogniverse-artifacts/prod",
    "CONFIG_STORE_URL": "redis://redis.cogniverse:6379/0",
    "ROUTER_OPTIMIZER_STUDENT_MODEL": "openai/gpt-4o-mini",
}


@pytest.fixture
def run_launcher(tmp_path):
    # K8sRunLauncher loads a kube config when built; point it at an (unused) cluster entry.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        "clusters: [{name: test, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test}}]\nusers: [{name: test, user: {token: unused}}]\n"
    )
    config = dict(render_instance(load_values())["run_launcher"]["config"])
    config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return K8sRunLauncher(**config)


@pytest.fixture(scope="module")
def k8s_defs():
    import importlib

    import cogniverse_assets.definitions as definitions

    with pytest.MonkeyPatch.context() as patch:
        for key, value in K8S_ENV.items():
            patch.setenv(key, value)
        module = importlib.reload(definitions)
        yield module.defs
    importlib.reload(definitions)


def step_job(run_launcher, defs, asset_key: str, tenant: str = "acme") -> dict:
    """Mirror of K8sStepHandler.launch_step's spec building, with its own building blocks."""
    job = defs.resolve_job_def("optimize_tenant")
    step_key = "__".join(dg.AssetKey.from_user_string(asset_key).path)
    node = next(node for node in job.graph.node_dict.values() if node.name == step_key)
    run = dg.DagsterRun(
        job_name=job.name, run_id="7f3c9e2a-0000-4000-8000-000000000001", tags={"dagster/partition": tenant}
    )
    context = K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=False)
    context = context.merge(
        K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(DEFAULT_STEP_K8S_CONFIG))
    )
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(node.tags)))
    spec = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, run_launcher),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{step_key.replace('_', '-')}",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": job.name, "dagster/op": step_key, "dagster/run-id": run.run_id},
        env_vars=[
            {"name": "DAGSTER_RUN_JOB_NAME", "value": job.name},
            {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key},
        ],
    )
    return ApiClient().sanitize_for_serialization(spec)


def _container(spec: dict) -> dict:
    [container] = spec["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_deployment_uses_the_step_pod_executor(k8s_defs):
    assert k8s_defs.resolve_job_def("optimize_tenant").executor_def.name == "k8s_step_pods"
    assert executor("local", {}).name == "multiprocess"


def test_optimizer_step_gets_a_bigger_pod_than_ingestion(run_launcher, k8s_defs):
    heavy = _container(step_job(run_launcher, k8s_defs, "modality/trained_module"))
    light = _container(step_job(run_launcher, k8s_defs, "modality/routing_traces"))
    assert heavy["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    assert light["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


@pytest.mark.parametrize("asset_key", ["routing/trained_module", "cross_modal/routing_traces"])
def test_step_job_image_env_secrets_and_labels(run_launcher, k8s_defs, asset_key):
    spec = step_job(run_launcher, k8s_defs, asset_key)
    container = _container(spec)
    step_key = asset_key.replace("/", "__")
    assert container["image"] == IMAGE
    assert container["args"] == ["dagster", "api", "execute_step"]
    assert {"configMapRef": {"name": "cogniverse-settings"}} in container["envFrom"]
    assert {"secretRef": {"name": "cogniverse-secrets"}} in container["envFrom"]
    env = {item["name"]: item for item in container["env"]}
    assert env["DAGSTER_RUN_STEP_KEY"]["value"] == step_key
    # Dagster's storage password comes from the chart's secret, never a literal.
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "cogniverse-postgresql",
        "key": "postgresql-password",
    }
    labels = spec["spec"]["template"]["metadata"]["labels"]
    assert labels["dagster/op"] == step_key and labels["app.kubernetes.io/component"] == "step_worker"
    assert spec["spec"]["backoffLimit"] == 0  # Dagster retries steps itself (RetryPolicy), not Kubernetes
