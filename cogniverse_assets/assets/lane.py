"""One lane of assets per routing module: every stage is keyed ``<module>/<stage>``, grouped by
module and partitioned by tenant. ``lane_asset`` says that once for every stage's factory; the
pieces every stage shares (the tenant's settings and Phoenix, the retry policy and error rules for
outside calls, the stage that completes a lane) live here too."""

import functools
from contextlib import contextmanager
from typing import Iterator

import dagster as dg
import httpx

from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_resources.config_store import ConfigStoreResource, TenantNotFound
from cogniverse_resources.phoenix import PhoenixEndpointRefused, PhoenixResource, PhoenixUnavailable
from cogniverse_resources.redaction import redact_urls
from cogniverse_resources.tenant import RoutingConfig

# Phoenix, Vespa and LM calls are retried with backoff; configuration errors are not (dg.Failure
# with allow_retries=False).
EXTERNAL_CALL_RETRY = dg.RetryPolicy(
    max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


# A lane is "optimized" once its plan ran (a skip is a finished optimization too).
COMPLETION_STAGE = "optimization_plan"

# A lane's stages, upstream first.
LANE_STAGES = (
    "llm_annotations",
    "routing_traces",
    "synthetic_examples",
    "training_set",
    "optimization_plan",
    "trained_module",
    "evaluation",
    "deployment",
)


def lane_keys(module: str) -> list[dg.AssetKey]:
    return list(_lane_keys(module))


@functools.cache
def _lane_keys(module: str) -> tuple[dg.AssetKey, ...]:
    # Built once: the sensor asks for them twice per run request, 20,000 requests in a busy tick.
    return tuple(dg.AssetKey([module, stage]) for stage in LANE_STAGES)


def stage_key(spec: RoutingModuleSpec, stage: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, stage])


def lane_asset(
    spec: RoutingModuleSpec, stage: str, after: tuple[str, ...] = (), extra_deps: tuple[str, ...] = (), **asset_kwargs
):
    """``@dg.asset`` for ``<module>/<stage>``, depending on the lane's ``after`` stages."""
    deps = [stage_key(spec, upstream) for upstream in after] + [dg.AssetKey(key) for key in extra_deps]
    return dg.asset(
        key=stage_key(spec, stage),
        group_name=spec.name,
        partitions_def=tenants_partitions,
        deps=deps or None,
        **asset_kwargs,
    )


def tenant_config(config_store: ConfigStoreResource, tenant_id: str) -> RoutingConfig:
    """The tenant's settings; an unknown or invalid tenant fails the step without retries."""
    try:
        return config_store.store().get(tenant_id)
    except (TenantNotFound, ValueError) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


def tenant_phoenix(phoenix: PhoenixResource, config: RoutingConfig) -> PhoenixResource:
    """The tenant's Phoenix; a refused endpoint fails the step without retries (configuration, not
    an outage: retrying cannot help)."""
    try:
        return phoenix.for_tenant(config.phoenix_endpoint, config.phoenix_api_key_env)
    except PhoenixEndpointRefused as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error


@contextmanager
def phoenix_errors(phoenix: PhoenixResource, doing: str) -> Iterator[None]:
    """Phoenix failures inside the block become ``PhoenixUnavailable`` saying what failed (``doing``:
    "reading acme/modality"); EXTERNAL_CALL_RETRY retries them."""
    try:
        yield
    except httpx.HTTPError as error:  # the client's and REST reads
        raise PhoenixUnavailable(
            f"Phoenix at {phoenix.redacted_endpoint} failed while {doing}: "
            f"{type(error).__name__}: {redact_urls(str(error))}"
        ) from error
    except PhoenixUnavailable as error:  # the resource's GraphQL reads, already redacted
        raise PhoenixUnavailable(f"{doing} failed: {error}") from error
