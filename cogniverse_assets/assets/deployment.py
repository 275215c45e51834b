"""``<module>/deployment``: moves the tenant × module deployment pointer to the evaluated candidate.

Reads ``evaluation.json``; writes a deployment record to the config store. It runs only when the
evaluation's blocking promotion gate passed, and re-checks the decision itself.

The pointer in the config store is the truth, not the evaluation: the candidate is deployed only
while the evaluation still describes the present, that is when the version it was compared against
(``EvaluationRecord.deployed_version``) is still deployed and no deployment record of the tenant ×
module is newer than the evaluation. After ``cogniverse deployments rollback`` (or any other move
of the pointer) the evaluation is stale and materializing ``deployment`` again fails without
retries; the next lane run evaluates against what is deployed now.
"""

from datetime import datetime, timezone

import dagster as dg

from cogniverse_assets.assets.evaluation import read_evaluation
from cogniverse_assets.assets.lane import lane_asset
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_assets.records import EvaluationRecord
from cogniverse_assets.runtime import UNOPTIMIZED_VERSION
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource, DeploymentRecord


def _moment(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def stale_reason(evaluation: EvaluationRecord, history: list[DeploymentRecord]) -> str | None:
    """Why ``evaluation`` no longer describes the deployment (``history``: oldest first), or None
    when its candidate may still be deployed."""
    current = history[-1].version if history else UNOPTIMIZED_VERSION
    if evaluation.deployed_version != current:
        return (
            f"the evaluation compared {evaluation.candidate_version} against {evaluation.deployed_version}, "
            f"but {current} is deployed now"
        )
    evaluated_at = _moment(evaluation.evaluated_at)
    later = [record for record in history if _moment(record.at) > evaluated_at]
    if later:
        move = later[-1]
        return (
            f"the deployment pointer moved after the evaluation ({evaluation.evaluated_at}): "
            f"{move.action} to {move.version} by {move.actor} at {move.at}"
        )
    return None


def build_deployment(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "deployment",
        after=("evaluation",),
        kinds={"dspy"},
        description=f"Reads the `{spec.name}` evaluation; moves the tenant's deployment pointer to the "
        "candidate (only after the promotion gate passed, and only while the evaluated baseline is still "
        "deployed and the pointer has not moved since the evaluation).",
    )
    def deployment(
        context: dg.AssetExecutionContext, config_store: ConfigStoreResource, artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        tenant_id = context.partition_key
        record = read_evaluation(artifacts, tenant_id, spec.name)
        if record is None or not record.promote:
            raise dg.Failure(
                f"refusing to deploy {spec.name} for {tenant_id}: the evaluation did not pass the promotion gate",
                allow_retries=False,
            )
        store = config_store.store()
        history = store.deployment_history(tenant_id, spec.name)
        stale = stale_reason(record, history)
        if stale:
            raise dg.Failure(
                f"refusing to deploy {spec.name} {record.candidate_version} for {tenant_id}: {stale}; "
                "the next lane run evaluates against the deployed version",
                allow_retries=False,
            )
        previous = history[-1].version if history else UNOPTIMIZED_VERSION
        store.record_deployment(
            DeploymentRecord(
                tenant_id=tenant_id,
                module=spec.name,
                version=record.candidate_version,
                action="promote",
                actor=f"dagster run {context.run.run_id[:8]}",
                reason="; ".join(record.reasons),
                score=record.candidate["accuracy"],
                previous_version=previous,
            )
        )
        return dg.MaterializeResult(
            metadata={
                "deployed_version": record.candidate_version,
                "previous_version": previous,
                "action": "promote",
                "accuracy": record.candidate["accuracy"],
            }
        )

    return deployment


deployment_assets = [build_deployment(spec) for spec in ROUTING_MODULES.values()]
