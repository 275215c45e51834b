"""``<module>/optimization_plan``: train or skip, and with which optimizer.

Reads the example table, the training set, the optimization history and the meta-model; writes
the plan (decision, reasons, features, predictions) as JSON next to the module's tables.
"""

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from cogniverse_assets.assets.lane import lane_asset, tenant_config
from cogniverse_assets.assets.optimizer_meta_model import load_meta_model
from cogniverse_assets.assets.routing_traces import TRACES_TABLE
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE, validation_source_of
from cogniverse_assets.freshness import fresh_on_completion, freshness_check_spec
from cogniverse_assets.history import read_history
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.planning import LaneContext, Plan, compute_features, rules_plan, training_fingerprint
from cogniverse_resources.artifacts import ArtifactStore, load_module_payload
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.tenant import RoutingConfig

PLAN_FILE = "optimization_plan.json"
# Run tag of `cogniverse optimize --force-training`: train even when the training set is unchanged.
FORCE_TRAINING_TAG = "force_training"


class NoTrainingSet(LookupError):
    """The lane's training set has not been materialized for the tenant yet."""


@dataclass(frozen=True)
class LanePlan:
    """What ``plan_lane`` decided, and on which training set."""

    plan: Plan
    fingerprint: str
    validation_source: str


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


def plan_lane(
    instance: dg.DagsterInstance,
    artifacts: ArtifactStore,
    config: RoutingConfig,
    spec: RoutingModuleSpec,
    force_training: bool = False,
    local_student: bool = True,
) -> LanePlan:
    """Train or skip, and with which optimizer, on the lane's stored training set; no LM call.
    The asset and ``cogniverse optimize --dry-run`` both decide here."""
    traces = artifacts.read_table(config.tenant_id, spec.name, TRACES_TABLE)
    training_set = artifacts.read_table(config.tenant_id, spec.name, TRAINING_SET_TABLE)
    if traces is None or training_set is None:
        raise NoTrainingSet(f"{spec.name}/training_set has not been materialized for {config.tenant_id}")
    features = compute_features(
        traces,
        training_set,
        read_history(artifacts),
        config.tenant_id,
        spec.name,
        hours_since_last_training(instance, config.tenant_id, spec.name),
    )
    fingerprint = training_fingerprint(training_set)
    unchanged = last_trained_fingerprint(artifacts, config.tenant_id, spec.name) == fingerprint
    if unchanged and not force_training:
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
        lane = LaneContext(spec.name, local_student)
        plan = model.plan(features, config, lane) if model else rules_plan(features, config, lane)
        if model is None:
            plan.reasons.append("no meta-model yet: the rules decided")
        if unchanged:
            plan.reasons.insert(0, f"training set unchanged ({fingerprint}), planned anyway: training was forced")
    # Too few annotated validation examples is a skip of the rules (planning._hard_limits); the
    # training set says why there are so few.
    return LanePlan(plan, fingerprint, validation_source_of(training_set))


def build_optimization_plan(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "optimization_plan",
        after=("training_set",),
        extra_deps=("optimizer_meta_model",),
        kinds={"xgboost"},
        check_specs=[freshness_check_spec(spec.name)],
        description=f"Reads the `{spec.name}` training set, traces, history and meta-model; writes the "
        f"decision (train/skip, optimizer) with its reasons and features. Run tag `{FORCE_TRAINING_TAG}=true` "
        "plans training even when the training set is unchanged.",
    )
    def optimization_plan(
        context: dg.AssetExecutionContext,
        config_store: ConfigStoreResource,
        artifacts: ArtifactStore,
        lm: LanguageModelResource,
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        force_training = context.run.tags.get(FORCE_TRAINING_TAG) == "true"
        try:
            decided = plan_lane(context.instance, artifacts, config, spec, force_training, lm.is_local())
        except NoTrainingSet as error:
            raise dg.Failure(str(error), allow_retries=False) from error
        plan, fingerprint, validation_source = decided.plan, decided.fingerprint, decided.validation_source
        features = plan.features
        payload = {
            **plan.to_json(),
            "training_fingerprint": fingerprint,
            "tenant_id": config.tenant_id,
            "module": spec.name,
            "validation_source": validation_source,
            "max_training_iterations": config.max_training_iterations,
            "forced_training": force_training,
            "planned_at": datetime.now(timezone.utc).isoformat(),
        }
        path = artifacts.write_json(artifacts.path(config.tenant_id, spec.name, PLAN_FILE), payload)
        return dg.MaterializeResult(
            metadata={
                "decision": plan.decision,
                "optimizer": plan.optimizer or "-",
                "source": plan.source,
                "validation_source": validation_source,
                "forced_training": force_training,
                "reasons": dg.MetadataValue.json(plan.reasons),
                "features": dg.MetadataValue.json({k: (None if v != v else round(v, 4)) for k, v in features.items()}),
                "predictions": dg.MetadataValue.json(plan.predictions),
                "plan": dg.MetadataValue.path(path),
            },
            check_results=[fresh_on_completion()],
        )

    return optimization_plan


optimization_plan_assets = [build_optimization_plan(spec) for spec in ROUTING_MODULES.values()]
