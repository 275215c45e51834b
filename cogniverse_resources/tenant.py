"""Tenant identity and per-tenant optimization settings.

Tenant ids end up in Dagster partition keys, Phoenix project names, Redis keys and artifact paths,
so one rule guards all of them. Dagster silently mis-parses partition keys containing ``|`` or
``,`` and a ``/`` or ``..`` would escape an artifact folder; the pattern excludes all of those.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cogniverse_resources.optimization_window import OptimizationWindow, time_zone
from cogniverse_resources.redaction import has_userinfo

TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# The promotion gate's defaults, also what scoring and the calibrated optimizer use when not told.
DEFAULT_PROMOTION_MIN_GAIN = 0.01
DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP = 0.15

OptimizerPreference = Literal[
    "auto", "knn", "labeled", "calibrated", "calibrated_state", "bootstrap", "mipro", "simba", "gepa"
]


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

    # hide_input_in_errors: a rejected value (an endpoint with a password in it) never reaches a message.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    tenant_id: str
    enable_auto_optimization: bool = True
    optimization_interval_seconds: int = Field(3600, ge=60, le=30 * 24 * 3600)
    min_samples_for_optimization: int = Field(100, ge=1, le=1_000_000)
    preferred_optimizer: OptimizerPreference = "auto"
    max_training_iterations: int = Field(100, ge=1, le=10_000)
    # What one optimization may spend; the plan only picks optimizers expected to fit. The defaults
    # fit a 2-core machine with the local LM (about 2 s a call); raise them for MIPROv2, SIMBA or
    # GEPA on production LMs.
    max_optimization_seconds: int = Field(120, ge=1, le=7 * 24 * 3600)
    max_optimization_lm_calls: int = Field(50, ge=0, le=1_000_000)
    # Spans the teacher LM may label per run and module (<module>/llm_annotations); 0 = off. Off by
    # default: LLM labels count as annotations, so they enter the validation split that grades
    # candidates; a tenant opts in once the teacher's agreement with its people is known.
    llm_annotation_budget: int = Field(0, ge=0, le=100_000)
    use_synthetic_data: bool = True
    synthetic_data_ratio: float = Field(0.3, ge=0.0, lt=1.0)
    phoenix_lookback_hours: int = Field(24, ge=1, le=24 * 365)
    min_trace_confidence: float = Field(0.7, ge=0.0, le=1.0)
    # Promotion gate: required accuracy gain over the deployed module, and the largest recall loss
    # on any one class that a candidate may have.
    promotion_min_gain: float = Field(DEFAULT_PROMOTION_MIN_GAIN, ge=0.0, le=1.0)
    promotion_max_class_recall_drop: float = Field(DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP, ge=0.0, le=1.0)
    # A tenant whose traces live in its own Phoenix (data residency, a dedicated deployment);
    # None = the shared Phoenix server. Set it to "" to go back to the shared one.
    phoenix_endpoint: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)
    # The name of the environment variable holding that Phoenix's API key (never the key itself).
    # Without it the tenant's Phoenix gets no key: the shared PHOENIX_API_KEY only ever goes to the
    # shared Phoenix. "" clears it.
    phoenix_api_key_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=128)
    # Local hours in which the sensor may start this tenant's lanes ("01:00-05:00"; "22:00-02:00"
    # runs across midnight), in optimization_timezone (an IANA name). None or "" = any time.
    optimization_window: str | None = Field(None, max_length=32)
    optimization_timezone: str = Field("UTC", max_length=64)

    def __setattr__(self, name: str, value: object) -> None:
        # pydantic assigns first and runs model validators after: a rejected assignment would stay
        # in place. Put the previous values back, so a refused change loses nothing and keeps nothing.
        previous = dict(self.__dict__)
        try:
            super().__setattr__(name, value)
        except ValidationError:
            self.__dict__.update(previous)
            raise

    # "" (or blanks) clears these settings: the shared Phoenix, no key variable, any time.
    @field_validator("phoenix_endpoint", "phoenix_api_key_env", "optimization_window", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("phoenix_endpoint")
    @classmethod
    def _no_credentials_in_endpoint(cls, value: str | None) -> str | None:
        if value is not None and has_userinfo(value):
            raise ValueError(
                "phoenix_endpoint must not carry credentials (user:password@host): put the API key in an "
                "environment variable and name that variable in phoenix_api_key_env"
            )
        return value

    @field_validator("optimization_timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        time_zone(value)
        return value

    @field_validator("optimization_window")
    @classmethod
    def _window_parses(cls, value: str | None) -> str | None:
        # The syntax does not depend on the time zone, which has its own validator.
        if value is not None:
            OptimizationWindow.parse(value)
        return value

    def window(self) -> OptimizationWindow | None:
        """The parsed ``optimization_window``, or None for any time."""
        if self.optimization_window is None:
            return None
        return OptimizationWindow.parse(self.optimization_window, self.optimization_timezone)

    @field_validator("tenant_id")
    @classmethod
    def _valid_tenant_id(cls, value: str) -> str:
        return validate_tenant_id(value)

    @model_validator(mode="after")
    def _lookback_covers_the_interval(self) -> "RoutingConfig":
        # Ingestion and the sensor never read traces older than the lookback: a lane that runs less
        # often than that would lose the traces in between.
        if self.phoenix_lookback_hours * 3600 < self.optimization_interval_seconds:
            raise ValueError(
                f"phoenix_lookback_hours={self.phoenix_lookback_hours} ({self.phoenix_lookback_hours * 3600} s) is "
                f"shorter than optimization_interval_seconds={self.optimization_interval_seconds}: traces older than "
                "the lookback are never read, so the traces between two runs would be lost; raise "
                "phoenix_lookback_hours or lower optimization_interval_seconds"
            )
        return self


def routing_config_field_names() -> list[str]:
    """The settable fields of ``RoutingConfig`` (everything but the id)."""
    return [name for name in RoutingConfig.model_fields if name != "tenant_id"]
