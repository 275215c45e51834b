"""``optimizer_meta_model``: XGBoost models of optimization gain and cost, across all tenants.

Reads the optimization history; writes the model (XGBoost JSON) to the artifact store. Retrains
only when the history has grown; until it has ``MIN_HISTORY_FOR_META_MODEL`` measured outcomes it
says so and the rules decide. ``meta_model_sensor`` (RUNNING by default) requests a run whenever the
history holds outcomes the stored model was not trained on.
"""

from datetime import datetime, timezone

import dagster as dg

from cogniverse_assets.history import read_history
from cogniverse_assets.planning import MIN_HISTORY_FOR_META_MODEL, MetaModel, outcome_rows
from cogniverse_resources.artifacts import ArtifactStore

META_MODEL_FILE = "optimizer_meta_model.json"


def load_meta_model(artifacts: ArtifactStore) -> MetaModel | None:
    """The stored meta-model; None when there is none, or when it was trained on other features or
    optimizers (an older release): the rules decide until the next retrain."""
    payload = artifacts.read_json(artifacts.global_path(META_MODEL_FILE))
    if not payload:
        return None
    try:
        return MetaModel.from_json(payload)
    except ValueError:
        return None


@dg.asset(
    key="optimizer_meta_model",
    group_name="meta",
    kinds={"xgboost"},
    description="Reads the cross-tenant optimization history; writes XGBoost models predicting the "
    "gain and LM cost of each optimizer (used by every optimization_plan).",
)
def optimizer_meta_model(context: dg.AssetExecutionContext, artifacts: ArtifactStore) -> dg.MaterializeResult:
    outcomes = outcome_rows(read_history(artifacts))
    current = load_meta_model(artifacts)
    if len(outcomes) < MIN_HISTORY_FOR_META_MODEL:
        return dg.MaterializeResult(
            metadata={
                "status": f"not enough history: {len(outcomes)} measured outcomes < "
                f"{MIN_HISTORY_FOR_META_MODEL}; the rules decide",
                "outcomes": len(outcomes),
            }
        )
    if current is not None and current.trained_on == len(outcomes):
        return dg.MaterializeResult(metadata={"status": "history unchanged; model kept", "outcomes": len(outcomes)})
    model = MetaModel.fit(outcomes)
    payload = {**model.to_json(), "trained_at": datetime.now(timezone.utc).isoformat()}
    path = artifacts.write_json(artifacts.global_path(META_MODEL_FILE), payload)
    context.log.info(f"meta-model trained on {len(outcomes)} outcomes")
    return dg.MaterializeResult(
        metadata={
            "status": "trained",
            "outcomes": len(outcomes),
            "feature_importance": dg.MetadataValue.json(model.feature_importance()),
            "model": dg.MetadataValue.path(path),
        }
    )
