"""The cross-tenant history of optimization plans and their measured outcomes: what
``optimizer_meta_model`` learns from. Evaluation records one outcome per evaluated candidate.

One small JSON file per outcome, ``<artifacts>/_global/optimization_history/<tenant>/<module>/<version>.json``,
written atomically: tenants evaluated in parallel never rewrite each other's records (nothing is
lost), and a retried evaluation of the same version overwrites its own record (nothing is
duplicated). ``read_history`` lists and concatenates them, oldest first; a single
``optimization_history.parquet`` written by earlier releases is read too.
"""

from __future__ import annotations

import json

import pandas as pd
from upath import UPath

from cogniverse_assets.planning import FEATURE_NAMES
from cogniverse_resources.artifacts import ArtifactStore

HISTORY_TABLE = "optimization_history"  # the earlier single table, read when present
HISTORY_DIR = "optimization_history"
HISTORY_COLUMNS = [
    "tenant_id",
    "module",
    "version",
    "optimizer",
    *FEATURE_NAMES,
    "gain",
    "lm_calls",
    "wall_time_s",
    "candidate_accuracy",
    "deployed_accuracy_eval",
    "recorded_at",
]
RECORD_KEY = ["tenant_id", "module", "version"]
NUMERIC_COLUMNS = [column for column in HISTORY_COLUMNS if column not in (*RECORD_KEY, "optimizer", "recorded_at")]


def record_path(artifacts: ArtifactStore, tenant_id: str, module: str, version: str) -> UPath:
    return artifacts.global_path(HISTORY_DIR, str(tenant_id), str(module), f"{version}.json")


def _plain(value):
    """JSON-ready: numpy scalars become Python numbers, missing values None."""
    if isinstance(value, (list, tuple, dict)):
        return value
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return None if value is None or pd.isna(value) else value


def _record_files(artifacts: ArtifactStore) -> list[UPath]:
    root = artifacts.global_path(HISTORY_DIR)
    if not root.exists():
        return []
    # Temporary files of atomic writes are named ``.<name>.<uuid>.tmp``: never matched.
    return [path for path in root.glob("*/*/*.json") if not path.name.startswith(".")]


def count_records(artifacts: ArtifactStore) -> int:
    """How many outcomes are recorded (files only; the earlier single table is not counted)."""
    return len(_record_files(artifacts))


def _read_records(artifacts: ArtifactStore) -> list[dict]:
    files = _record_files(artifacts)
    if not files:
        return []
    root = artifacts.global_path(HISTORY_DIR)
    if root.protocol in ("", "file", "local"):
        return [json.loads(path.read_text()) for path in files]
    # Object stores: one concurrent batch of GETs rather than one request after another.
    payloads = root.fs.cat([path.path for path in files])
    return [json.loads(payload) for payload in payloads.values()]


def read_history(artifacts: ArtifactStore) -> pd.DataFrame:
    """Every recorded outcome, one row per (tenant, module, version), oldest first."""
    rows = _read_records(artifacts)
    frames = [pd.DataFrame(rows).reindex(columns=HISTORY_COLUMNS)] if rows else []
    legacy = artifacts.read_global_table(HISTORY_TABLE)
    if legacy is not None and len(legacy):
        frames.insert(0, legacy.reindex(columns=HISTORY_COLUMNS))
    if not frames:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    history = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    # A record file wins over a legacy row of the same version; retried legacy rows count once.
    history = history.drop_duplicates(RECORD_KEY, keep="last")
    history = history.sort_values(["recorded_at", *RECORD_KEY], kind="stable", na_position="first")
    for column in NUMERIC_COLUMNS:  # JSON null → NaN, as the table had them
        history[column] = pd.to_numeric(history[column], errors="coerce")
    return history.reset_index(drop=True)


def append_outcome(artifacts: ArtifactStore, row: dict) -> int:
    """Record one outcome (idempotent per tenant, module and version); returns the history size."""
    record = {column: _plain(row.get(column)) for column in HISTORY_COLUMNS}
    missing = [column for column in RECORD_KEY if record[column] in (None, "")]
    if missing:
        raise ValueError(f"an outcome needs {', '.join(missing)}")
    artifacts.write_json(record_path(artifacts, record["tenant_id"], record["module"], record["version"]), record)
    return len(read_history(artifacts))
