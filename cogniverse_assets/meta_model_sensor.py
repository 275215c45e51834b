"""``meta_model_sensor``: retrains ``optimizer_meta_model`` whenever the optimization history has
measured outcomes the stored model was not trained on, so that the meta-model takes over from the
rules by itself once ``MIN_HISTORY_FOR_META_MODEL`` outcomes exist, and keeps learning after.

A tick lists the history's record files and reads the stored model's ``trained_on``; it reads the
records themselves only when their number differs from ``trained_on``.
"""

from __future__ import annotations

import dagster as dg

from cogniverse_assets.assets.optimizer_meta_model import load_meta_model, optimizer_meta_model
from cogniverse_assets.history import HISTORY_TABLE, count_records, read_history
from cogniverse_assets.planning import MIN_HISTORY_FOR_META_MODEL, outcome_rows
from cogniverse_resources.artifacts import ArtifactStore


def measured_outcomes(artifacts: ArtifactStore, trained_on: int | None) -> int:
    """The number of outcomes the meta-model would train on now (what its ``trained_on`` counts)."""
    records = count_records(artifacts)
    legacy = artifacts.global_path(f"{HISTORY_TABLE}.parquet").exists()
    if not legacy and (records == trained_on or records < MIN_HISTORY_FOR_META_MODEL):
        # Records are only added or overwritten, never emptied: the count is exact without reading.
        return records
    return len(outcome_rows(read_history(artifacts)))


def meta_model_request(artifacts: ArtifactStore) -> dg.RunRequest | dg.SkipReason:
    model = load_meta_model(artifacts)
    trained_on = model.trained_on if model is not None else None
    outcomes = measured_outcomes(artifacts, trained_on)
    if outcomes < MIN_HISTORY_FOR_META_MODEL:
        return dg.SkipReason(f"{outcomes} measured outcomes < {MIN_HISTORY_FOR_META_MODEL}: the rules decide")
    if outcomes == trained_on:
        return dg.SkipReason(f"the meta-model is trained on all {outcomes} measured outcomes")
    return dg.RunRequest(
        # One run per (stored model, history size): a failed run is requested again once more outcomes arrive.
        run_key=f"optimizer_meta_model.{trained_on if trained_on is not None else 'none'}.{outcomes}",
        tags={"trigger": "meta_model_sensor"},
    )


@dg.sensor(
    name="meta_model_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=[optimizer_meta_model],
    description="Retrains optimizer_meta_model when the optimization history has measured outcomes "
    "the stored model was not trained on (and at least MIN_HISTORY_FOR_META_MODEL of them).",
)
def meta_model_sensor(context: dg.SensorEvaluationContext, artifacts: ArtifactStore):
    request = meta_model_request(artifacts)
    if isinstance(request, dg.RunRequest):
        context.log.info(f"retraining optimizer_meta_model: {request.run_key}")
    return request
