"""Tenant identity and per-tenant optimization settings.

Tenant ids end up in Dagster partition keys, Phoenix project names, Redis keys and artifact paths,
so one rule guards all of them. Dagster silently mis-parses partition keys containing ``|`` or
``,`` and a ``/`` or ``..`` would escape an artifact folder; the pattern excludes all of those.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

OptimizerPreference = Literal["auto", "bootstrap", "mipro", "simba", "gepa"]


class InvalidTenantId(ValueError):
    """A tenant id that would be unsafe as a partition key, project name or path segment."""


def validate_tenant_id(tenant_id: object) -> str:
    """Return ``tenant_id`` unchanged if it is a valid tenant id, else raise ``InvalidTenantId``."""
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidTenantId(
            f"invalid tenant id {tenant_id!r}: use 1-63 characters of lower-case letters, digits, "
            "'_' or '-', starting with a letter or digit (no '|', ',', '/', '..', spaces or upper case)"
        )
    return tenant_id


class RoutingConfig(BaseModel):
    """Per-tenant settings of the auto-optimization loop (defaults from the design document)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tenant_id: str
    enable_auto_optimization: bool = True
    optimization_interval_seconds: int = Field(3600, ge=60, le=30 * 24 * 3600)
    min_samples_for_optimization: int = Field(100, ge=1, le=1_000_000)
    preferred_optimizer: OptimizerPreference = "auto"
    max_training_iterations: int = Field(100, ge=1, le=10_000)
    use_synthetic_data: bool = True
    synthetic_data_ratio: float = Field(0.3, ge=0.0, lt=1.0)
    phoenix_lookback_hours: int = Field(24, ge=1, le=24 * 365)
    min_trace_confidence: float = Field(0.7, ge=0.0, le=1.0)
    # Promotion gate: required accuracy gain over the deployed module, and the largest recall loss
    # on any one class that a candidate may have.
    promotion_min_gain: float = Field(0.01, ge=0.0, le=1.0)
    promotion_max_class_recall_drop: float = Field(0.15, ge=0.0, le=1.0)
    # A tenant whose traces live in its own Phoenix (data residency, a dedicated deployment);
    # None = the shared Phoenix server. Set it to "" to go back to the shared one.
    phoenix_endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)

    @field_validator("phoenix_endpoint", mode="before")
    @classmethod
    def _empty_endpoint_is_shared(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tenant_id")
    @classmethod
    def _valid_tenant_id(cls, value: str) -> str:
        return validate_tenant_id(value)


def routing_config_field_names() -> list[str]:
    """The settable fields of ``RoutingConfig`` (everything but the id)."""
    return [name for name in RoutingConfig.model_fields if name != "tenant_id"]
