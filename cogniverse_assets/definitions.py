"""The whole system at a glance: partitions, sensors and the resources at the edge."""

import dagster as dg

from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_assets.sensors import tenant_discovery_sensor

defs = dg.Definitions(
    sensors=[tenant_discovery_sensor],
    resources={
        "config_store": ConfigStoreResource(),
        "phoenix": PhoenixResource(),
        "lm": LanguageModelResource(),
    },
)
