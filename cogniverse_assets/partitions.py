"""Partitions: one dynamic partition per tenant, kept in sync by ``tenant_discovery_sensor``."""

import dagster as dg

tenants_partitions = dg.DynamicPartitionsDefinition(name="tenants")
