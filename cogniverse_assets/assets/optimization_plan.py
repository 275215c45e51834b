"""``<module>/optimization_plan``: train or skip, and with which optimizer.

Reads the example table, the training set, the optimization history and the meta-model; writes
the plan (decision, reasons, features, predictions) as JSON next to the module's tables.
"""

from datetime import datetime, timezone

import dagster as dg

from cogniverse_assets.assets.lane import lane_asset, tenant_config
from cogniverse_assets.assets.optimizer_meta_model import load_meta_model
from cogniverse_assets.assets.routing_traces import TRACES_TABLE
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE, validation_source_of
from cogniverse_assets.history import read_history
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.planning import Plan, compute_features, rules_plan, training_fingerprint
from cogniverse_resources.artifacts import ArtifactStore, load_module_payload
from cogniverse_resources.config_store import ConfigStoreResource

PLAN_FILE = "optimization_plan.json"


def hours_since_last_training(instance: dg.DagsterInstance, tenant_id: str, module: str) -> float | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([module, "trained_module"]), asset_partitions=[tenant_id]), limit=1
    ).records
    if not records:
        return None
    return (datetime.now(timezone.utc).timestamp() - records[0].timestamp) / 3600


def last_trained_fingerprint(artifacts: ArtifactStore, tenant_id: str, module: str) -> str | None:
    """The training fingerprint of the newest trained module version, if any."""
    try:
        payload = load_module_payload(artifacts, tenant_id, module)
    except FileNotFoundError:
        return None
    return payload.get("plan", {}).get("training_fingerprint")


def build_optimization_plan(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "optimization_plan",
        after=("training_set",),
        extra_deps=("optimizer_meta_model",),
        kinds={"xgboost"},
        description=f"Reads the `{spec.name}` training set, traces, history and meta-model; writes the "
        "decision (train/skip, optimizer) with its reasons and features.",
    )
    def optimization_plan(
        context: dg.AssetExecutionContext, config_store: ConfigStoreResource, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        traces = artifacts.read_table(config.tenant_id, spec.name, TRACES_TABLE)
        training_set = artifacts.read_table(config.tenant_id, spec.name, TRAINING_SET_TABLE)
        if traces is None or training_set is None:
            raise dg.Failure(
                f"{spec.name}/training_set has not been materialized for {config.tenant_id}", allow_retries=False
            )
        features = compute_features(
            traces,
            training_set,
            read_history(artifacts),
            config.tenant_id,
            spec.name,
            hours_since_last_training(context.instance, config.tenant_id, spec.name),
        )
        fingerprint = training_fingerprint(training_set)
        trained_on = last_trained_fingerprint(artifacts, config.tenant_id, spec.name)
        if trained_on == fingerprint:
            # Nothing new since the last training: another compile would cost LM calls for nothing.
            plan = Plan(
                "skip",
                None,
                "unchanged",
                [f"training set unchanged since the last trained version ({fingerprint})"],
                features,
            )
        else:
            model = load_meta_model(artifacts)
            plan = model.plan(features, config) if model else rules_plan(features, config)
            if model is None:
                plan.reasons.append("no meta-model yet: the rules decided")
        # Too few annotated validation examples is a skip of the rules (planning._hard_limits); the
        # training set says why there are so few.
        validation_source = validation_source_of(training_set)
        payload = {
            **plan.to_json(),
            "training_fingerprint": fingerprint,
            "tenant_id": config.tenant_id,
            "module": spec.name,
            "validation_source": validation_source,
            "max_training_iterations": config.max_training_iterations,
            "planned_at": datetime.now(timezone.utc).isoformat(),
        }
        path = artifacts.write_json(artifacts.path(config.tenant_id, spec.name, PLAN_FILE), payload)
        return dg.MaterializeResult(
            metadata={
                "decision": plan.decision,
                "optimizer": plan.optimizer or "-",
                "source": plan.source,
                "validation_source": validation_source,
                "reasons": dg.MetadataValue.json(plan.reasons),
                "features": dg.MetadataValue.json({k: (None if v != v else round(v, 4)) for k, v in features.items()}),
                "predictions": dg.MetadataValue.json(plan.predictions),
                "plan": dg.MetadataValue.path(path),
            }
        )

    return optimization_plan


optimization_plan_assets = [build_optimization_plan(spec) for spec in ROUTING_MODULES.values()]
