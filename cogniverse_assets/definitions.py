"""The whole system at a glance: one lane of assets per routing module, the sensors that start
them, and the resources at the edge."""

import dagster as dg

from cogniverse_resources.artifacts import ArtifactStore, DSPyModuleIOManager
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.content import ContentBackendResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_assets.assets.evaluation import deployment_assets, evaluation_assets, promotion_gate_checks
from cogniverse_assets.assets.optimization_plan import optimization_plan_assets
from cogniverse_assets.assets.optimizer_meta_model import optimizer_meta_model
from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.assets.synthetic_examples import synthetic_examples_assets
from cogniverse_assets.assets.trained_module import trained_module_assets
from cogniverse_assets.assets.training_set import training_set_assets
from cogniverse_assets.sensors import tenant_discovery_sensor, trace_threshold_sensor

defs = dg.Definitions(
    assets=[
        *routing_traces_assets,
        *synthetic_examples_assets,
        *training_set_assets,
        optimizer_meta_model,
        *optimization_plan_assets,
        *trained_module_assets,
        *evaluation_assets,
        *deployment_assets,
    ],
    asset_checks=promotion_gate_checks,
    sensors=[tenant_discovery_sensor, trace_threshold_sensor],
    resources={
        "config_store": ConfigStoreResource(),
        "phoenix": PhoenixResource(),
        "lm": LanguageModelResource(),
        "content": ContentBackendResource(),
        "artifacts": ArtifactStore(),
        "dspy_module_io_manager": DSPyModuleIOManager(),
    },
)
