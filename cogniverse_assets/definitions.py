"""The whole system at a glance: one lane of assets per routing module, the sensors and the job
that start them, and the resources at the edge, configured for the deployment named by
``COGNIVERSE_DEPLOYMENT`` (local by default, k8s for one pod per step; see deployment.py)."""

import dagster as dg

from cogniverse_assets.assets.deployment import deployment_assets
from cogniverse_assets.assets.evaluation import evaluation_assets
from cogniverse_assets.assets.llm_annotations import llm_annotations_assets
from cogniverse_assets.assets.optimization_plan import optimization_plan_assets
from cogniverse_assets.assets.optimizer_meta_model import optimizer_meta_model
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets
from cogniverse_assets.assets.trained_module import trained_module_assets
from cogniverse_assets.assets.training_set import training_set_assets
from cogniverse_assets.deployment import for_environment
from cogniverse_assets.jobs import optimize_tenant
from cogniverse_assets.meta_model_sensor import meta_model_sensor
from cogniverse_assets.sensors import lane_failure_sensor, tenant_discovery_sensor, trace_threshold_sensor

DEPLOYMENT, RESOURCES, EXECUTOR = for_environment()

defs = dg.Definitions(
    assets=[
        *llm_annotations_assets,
        *routing_traces_assets,
        *synthetic_examples_assets,
        *training_set_assets,
        optimizer_meta_model,
        *optimization_plan_assets,
        *trained_module_assets,
        *evaluation_assets,
        *deployment_assets,
    ],
    jobs=[optimize_tenant],
    sensors=[tenant_discovery_sensor, trace_threshold_sensor, lane_failure_sensor, meta_model_sensor],
    resources=RESOURCES,
    executor=EXECUTOR,
)
