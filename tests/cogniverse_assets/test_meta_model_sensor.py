"""The meta-model learns by itself: recorded outcomes → ``meta_model_sensor`` requests a retrain →
``optimizer_meta_model`` → the next ``optimization_plan`` is the meta-model's."""

import dagster as dg
import numpy as np
import pandas as pd

from cogniverse_assets.assets.optimization_plan import PLAN_FILE, optimization_plan_assets
from cogniverse_assets.assets.optimizer_meta_model import optimizer_meta_model
from cogniverse_assets.assets.routing_traces import TRACES_TABLE
from cogniverse_assets.assets.training_set import TRAINING_SET_TABLE
from cogniverse_assets.definitions import defs
from cogniverse_assets.history import append_outcome
from cogniverse_assets.meta_model_sensor import meta_model_sensor
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.planning import FEATURE_NAMES, MIN_HISTORY_FOR_META_MODEL
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.lm import LanguageModelResource

LABELS = ["video", "image", "audio", "document", "text"]
# Cheap optimizers, so that the default budget (50 LM calls / 120 s) admits them.
GAINS = {"knn": 0.08, "labeled": 0.03, "bootstrap": 0.04}
CALLS = {"knn": 0, "labeled": 0, "bootstrap": 10}


def _record_outcomes(store: ArtifactStore, n: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        optimizer = list(GAINS)[i % len(GAINS)]
        features = {name: float("nan") for name in FEATURE_NAMES}
        features.update(
            train_count=float(rng.integers(30, 150)),
            validation_count=20.0,
            deployed_accuracy=float(rng.uniform(0.5, 0.9)),
            real_count=150.0,
        )
        append_outcome(
            store,
            {
                "tenant_id": f"t{i % 4}",
                "module": "modality",
                "version": f"v{i:03d}",
                "optimizer": optimizer,
                **features,
                "gain": GAINS[optimizer] + float(rng.normal(0, 0.003)),
                "lm_calls": CALLS[optimizer],
                "wall_time_s": 3.0,
                "candidate_accuracy": 0.8,
                "deployed_accuracy_eval": 0.75,
                "recorded_at": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
            },
        )


def _tick(store: ArtifactStore, instance):
    return meta_model_sensor(dg.build_sensor_context(instance=instance, resources={"artifacts": store}))


def _lane_tables(store: ArtifactStore, tenant: str) -> None:
    n = 60
    queries = [f"query number {i}" for i in range(n)]
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    traces = pd.DataFrame(
        {
            "span_id": [f"s{i}" for i in range(n)],
            "query": queries,
            "label": labels,
            "provenance": "human",
            "router_label": [label if i % 3 else "text" for i, label in enumerate(labels)],
            "confidence": 0.9,
        }
    )
    store.write_table(tenant, "modality", TRACES_TABLE, traces)
    training_set = traces[["query", "label", "provenance", "span_id"]].assign(
        split=["validation" if i % 4 == 0 else "train" for i in range(n)], validation_source="real"
    )
    store.write_table(tenant, "modality", TRAINING_SET_TABLE, training_set)


def test_outcomes_retrain_the_meta_model_and_the_next_plan_is_its_own(tmp_path):
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    config_store = ConfigStoreResource(url=f"sqlite://{tmp_path}/config.sqlite")
    with dg.instance_for_test() as instance:
        _record_outcomes(store, MIN_HISTORY_FOR_META_MODEL - 1)
        skipped = _tick(store, instance)
        assert isinstance(skipped, dg.SkipReason) and "the rules decide" in skipped.skip_message

        _record_outcomes(store, 5, start=MIN_HISTORY_FOR_META_MODEL - 1)  # 24 outcomes, >= 8 per optimizer
        request = _tick(store, instance)
        assert isinstance(request, dg.RunRequest) and request.run_key.endswith(".none.24")

        assert dg.materialize([optimizer_meta_model], instance=instance, resources={"artifacts": store}).success
        unchanged = _tick(store, instance)
        assert isinstance(unchanged, dg.SkipReason) and "all 24" in unchanged.skip_message

        config_store.store().add("acme")
        instance.add_dynamic_partitions(tenants_partitions.name, ["acme"])
        _lane_tables(store, "acme")
        plan_asset = optimization_plan_assets[0]  # modality
        result = dg.materialize(
            [plan_asset],
            partition_key="acme",
            instance=instance,
            resources={"artifacts": store, "config_store": config_store, "lm": LanguageModelResource()},
        )
        assert result.success
        plan = store.read_json(store.path("acme", "modality", PLAN_FILE))
        assert plan["source"] == "meta_model" and plan["decision"] == "train", plan["reasons"]
        assert plan["optimizer"] in GAINS and plan["validation_source"] == "real"

        _record_outcomes(store, 1, start=24)  # a new outcome: retrain again
        again = _tick(store, instance)
        assert isinstance(again, dg.RunRequest) and again.run_key.endswith(".24.25")


def test_the_sensor_runs_by_default_and_targets_the_meta_model():
    repository = defs.get_repository_def()
    (sensor,) = [sensor for sensor in repository.sensor_defs if sensor.name == "meta_model_sensor"]
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert repository.get_job(sensor.job_name).asset_layer.selected_asset_keys == {optimizer_meta_model.key}
