"""The optimization history: one record per (tenant, module, version), none lost by parallel
writers, none duplicated by a retried evaluation."""

import math
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pandas as pd

from cogniverse_assets.history import HISTORY_COLUMNS, HISTORY_TABLE, append_outcome, read_history
from cogniverse_assets.planning import FEATURE_NAMES
from cogniverse_resources.artifacts import ArtifactStore


def _outcome(tenant, module, version, gain=0.05, recorded_at="2025-01-01T00:00:00+00:00", **extra):
    features = {name: 1.0 for name in FEATURE_NAMES}
    return {
        "tenant_id": tenant,
        "module": module,
        "version": version,
        "optimizer": "bootstrap",
        **features,
        "gain": gain,
        "lm_calls": 10,
        "wall_time_s": 2.5,
        "candidate_accuracy": 0.8,
        "deployed_accuracy_eval": 0.75,
        "recorded_at": recorded_at,
        **extra,
    }


def _write_batch(root: str, tenant: str, count: int) -> None:
    store = ArtifactStore(root=root)
    for i in range(count):
        append_outcome(store, _outcome(tenant, "modality", f"v{i:03d}", recorded_at=f"2025-01-01T00:00:{i:02d}+00:00"))


def test_empty_history_has_the_columns(tmp_path):
    history = read_history(ArtifactStore(root=str(tmp_path)))
    assert history.empty and list(history.columns) == HISTORY_COLUMNS


def test_parallel_writers_lose_no_record(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    tenants, per_tenant = [f"t{i}" for i in range(8)], 15
    start = threading.Barrier(len(tenants))

    def write(tenant):
        start.wait()
        _write_batch(store.root, tenant, per_tenant)

    with ThreadPoolExecutor(len(tenants)) as pool:
        list(pool.map(write, tenants))
    history = read_history(store)
    assert len(history) == len(tenants) * per_tenant
    assert set(zip(history["tenant_id"], history["version"])) == {
        (tenant, f"v{i:03d}") for tenant in tenants for i in range(per_tenant)
    }


def test_parallel_processes_lose_no_record(tmp_path):
    # Dagster runs steps as processes: several evaluations record outcomes at the same moment.
    with ProcessPoolExecutor(3) as pool:
        list(pool.map(_write_batch, [str(tmp_path)] * 3, ["a", "b", "c"], [10] * 3))
    history = read_history(ArtifactStore(root=str(tmp_path)))
    assert len(history) == 30 and history.groupby("tenant_id").size().to_dict() == {"a": 10, "b": 10, "c": 10}


def test_a_retried_evaluation_records_one_row(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    append_outcome(store, _outcome("acme", "modality", "v1", gain=0.03))
    append_outcome(store, _outcome("acme", "routing", "v1", gain=0.01))
    # Phoenix logging failed after the first record; the retry records the same version again.
    size = append_outcome(store, _outcome("acme", "modality", "v1", gain=0.04, recorded_at="2025-01-01T00:05:00+00:00"))
    history = read_history(store)
    assert size == len(history) == 2
    row = history[history["module"] == "modality"].iloc[0]
    assert row["gain"] == 0.04 and row["recorded_at"] == "2025-01-01T00:05:00+00:00"


def test_rows_keep_the_shape_and_types_of_the_table(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    append_outcome(
        store,
        _outcome(
            "acme",
            "modality",
            "v2",
            recorded_at="2025-01-02T00:00:00+00:00",
            hours_since_training=float("nan"),
            lm_calls=np.int64(7),
            extra_field="ignored",
        ),
    )
    append_outcome(store, _outcome("acme", "modality", "v1", mean_past_gain=None, gain=np.float64(0.02)))
    history = read_history(store)
    assert list(history.columns) == HISTORY_COLUMNS
    assert list(history["version"]) == ["v1", "v2"]  # oldest first
    assert math.isnan(history.loc[1, "hours_since_training"]) and math.isnan(history.loc[0, "mean_past_gain"])
    assert history["lm_calls"].tolist() == [10, 7] and history["gain"].tolist() == [0.02, 0.05]
    assert pd.api.types.is_float_dtype(history["mean_past_gain"])


def test_the_earlier_single_table_is_still_read(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    legacy = pd.DataFrame(
        [
            _outcome("old", "modality", "v0", gain=0.1),
            _outcome("acme", "modality", "v1", gain=0.2),
            _outcome("acme", "modality", "v1", gain=0.2),
        ]
    ).reindex(columns=HISTORY_COLUMNS)
    store.write_global_table(HISTORY_TABLE, legacy)
    append_outcome(store, _outcome("acme", "modality", "v1", gain=0.3, recorded_at="2025-02-01T00:00:00+00:00"))
    history = read_history(store)
    # the record wins over the legacy rows of the same version; duplicated legacy rows count once
    rows = sorted(zip(history["tenant_id"], history["version"], history["gain"]))
    assert rows == [("acme", "v1", 0.3), ("old", "v0", 0.1)]
