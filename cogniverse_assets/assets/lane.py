"""One lane of assets per routing module: every stage is keyed ``<module>/<stage>``, grouped by
module and partitioned by tenant. ``lane_asset`` says that once for every stage's factory."""

import dagster as dg

from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.partitions import tenants_partitions


# A lane's stages, upstream first.
LANE_STAGES = (
    "routing_traces", "synthetic_examples", "training_set", "optimization_plan", "trained_module", "evaluation", "deployment",
)


def lane_keys(module: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([module, stage]) for stage in LANE_STAGES]


def stage_key(spec: RoutingModuleSpec, stage: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, stage])


def lane_asset(spec: RoutingModuleSpec, stage: str, after: tuple[str, ...] = (), extra_deps: tuple[str, ...] = (), **asset_kwargs):
    """``@dg.asset`` for ``<module>/<stage>``, depending on the lane's ``after`` stages."""
    deps = [stage_key(spec, upstream) for upstream in after] + [dg.AssetKey(key) for key in extra_deps]
    return dg.asset(
        key=stage_key(spec, stage),
        group_name=spec.name,
        partitions_def=tenants_partitions,
        deps=deps or None,
        **asset_kwargs,
    )
