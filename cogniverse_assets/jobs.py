"""Jobs for people and CLI backfills; the sensors start single lanes by asset selection."""

import dagster as dg

from cogniverse_assets.assets.lane import lane_keys
from cogniverse_assets.modules.registry import ROUTING_MODULES

# Partitioned by tenant (inferred from the lanes): `dagster job backfill -j optimize_tenant
# --partitions acme,globex` optimizes every module of those tenants, one run per tenant.
optimize_tenant = dg.define_asset_job(
    "optimize_tenant",
    selection=dg.AssetSelection.assets(*[key for module in ROUTING_MODULES for key in lane_keys(module)]),
    description="All three routing-module lanes of one tenant: traces -> ... -> gated deployment.",
)
