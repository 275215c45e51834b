"""Sensors: keep the ``tenants`` partitions in sync with the config store."""

from __future__ import annotations

import dagster as dg

from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.tenant import InvalidTenantId, validate_tenant_id
from cogniverse_assets.partitions import tenants_partitions


@dg.sensor(
    name="tenant_discovery_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds every tenant of the config store as a `tenants` partition.",
)
def tenant_discovery_sensor(context: dg.SensorEvaluationContext, config_store: ConfigStoreResource):
    known = set(context.instance.get_dynamic_partitions(tenants_partitions.name))
    new, rejected = [], []
    for tenant_id in config_store.store().tenant_ids():
        try:
            validate_tenant_id(tenant_id)
        except InvalidTenantId:
            # A record written around the CLI's validation must never become a partition key.
            rejected.append(tenant_id)
            continue
        if tenant_id not in known:
            new.append(tenant_id)
    if rejected:
        context.log.warning(f"ignored invalid tenant ids in the config store: {rejected!r}")
    if not new:
        return dg.SkipReason(f"no new tenants ({len(known)} known)")
    context.log.info(f"adding tenant partitions: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[tenants_partitions.build_add_request(new)])
