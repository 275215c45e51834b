"""The cross-tenant history of optimization plans and their measured outcomes: what
``optimizer_meta_model`` learns from. Evaluation appends one row per evaluated candidate."""

from __future__ import annotations

import pandas as pd

from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_assets.planning import FEATURE_NAMES

HISTORY_TABLE = "optimization_history"
HISTORY_COLUMNS = ["tenant_id", "module", "version", "optimizer", *FEATURE_NAMES, "gain", "lm_calls", "wall_time_s",
                   "candidate_accuracy", "deployed_accuracy_eval", "recorded_at"]


def read_history(artifacts: ArtifactStore) -> pd.DataFrame:
    history = artifacts.read_global_table(HISTORY_TABLE)
    return history if history is not None else pd.DataFrame(columns=HISTORY_COLUMNS)


def append_outcome(artifacts: ArtifactStore, row: dict) -> int:
    """Append one outcome; returns the history size. Rewrites the table atomically."""
    history = read_history(artifacts)
    updated = pd.concat([history, pd.DataFrame([row]).reindex(columns=HISTORY_COLUMNS)], ignore_index=True)
    artifacts.write_global_table(HISTORY_TABLE, updated)
    return len(updated)
