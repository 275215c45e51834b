"""``<module>/routing_traces``: a tenant's routing spans from Phoenix as labeled examples.

Reads the tenant's Phoenix project (spans from ``INGEST_OVERLAP`` before the stored table's newest
span, never before ``phoenix_lookback_hours`` ago) and the ``routing_feedback`` annotations of the
lookback, read in bulk by time range rather than by span id (``read_feedback``: from Phoenix's
database when ``read_database_url`` is set, else through GraphQL); writes the merged example table
(deduplicated by span id) and the quarantine table to the artifact store.

Spans reach Phoenix late (buffered exporters, retries, clock skew): one whose start time is older
than the newest stored span would be skipped for good by a reader that starts at that newest span.
Reading from an overlap picks those up; spans already stored are recognised by span id and not
processed again (their late feedback is re-read by ``_refresh_late_feedback`` instead). A span that
arrives more than ``INGEST_OVERLAP`` late is still missed.
"""

import logging
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd

from cogniverse_assets.assets.lane import EXTERNAL_CALL_RETRY, lane_asset, phoenix_errors, tenant_config, tenant_phoenix
from cogniverse_assets.examples import (
    EXAMPLE_COLUMNS,
    LABELED_PROVENANCES,
    QUARANTINE_COLUMNS,
    Malformed,
    choose_label,
    label_examples,
    parse_page,
)
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.phoenix_database import PhoenixDatabase, PhoenixDatabaseUnavailable
from cogniverse_resources.tenant import RoutingConfig

TRACES_TABLE = "routing_traces"
QUARANTINE_TABLE = "quarantine"
# How far before the newest stored span each run reads again, for spans that reached Phoenix late.
INGEST_OVERLAP = timedelta(hours=1)


def _as_time(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def _newest(*frames: pd.DataFrame | None) -> datetime | None:
    stamps = [_as_time(frame["start_time"].dropna()).max() for frame in frames if frame is not None and len(frame)]
    stamps = [stamp for stamp in stamps if not pd.isna(stamp)]
    return max(stamps).to_pydatetime() if stamps else None


def ingest_routing_traces(
    phoenix: PhoenixResource,
    artifacts: ArtifactStore,
    spec: RoutingModuleSpec,
    config: RoutingConfig,
    now: datetime | None = None,
    log: logging.Logger | dg.DagsterLogManager | None = None,
) -> dict:
    """Read new spans, label them, merge them into the stored tables; return the run's figures.
    ``log`` (default: Dagster's logger) hears when the feedback read falls back to GraphQL."""
    tenant_id = config.tenant_id
    now = now or datetime.now(timezone.utc)
    existing = artifacts.read_table(tenant_id, spec.name, TRACES_TABLE)
    if existing is None:
        existing = pd.DataFrame(columns=EXAMPLE_COLUMNS)
    old_quarantine = artifacts.read_table(tenant_id, spec.name, QUARANTINE_TABLE)
    lookback_start = now - timedelta(hours=config.phoenix_lookback_hours)
    # Re-read the last INGEST_OVERLAP before the newest stored span: spans that reached Phoenix
    # after the last run but started before its newest span. Spans seen before are skipped by id.
    watermark = _newest(existing, old_quarantine)
    read_from = max(lookback_start, watermark - INGEST_OVERLAP) if watermark else lookback_start

    known_ids = set(existing["span_id"])
    seen_ids = known_ids | (set(old_quarantine["span_id"]) if old_quarantine is not None else set())
    new_chunks: list[pd.DataFrame] = []
    quarantined: list[dict] = []
    fetched = reread = 0
    end = now + timedelta(seconds=1)
    pending: list[list[dict]] = []  # parsed pages waiting for the feedback

    def label_pending(annotations: Mapping[str, list[dict]]) -> None:
        nonlocal quarantined
        for examples in pending:
            labeled, contradictory = label_examples(examples, annotations, spec, config.min_trace_confidence)
            quarantined += contradictory
            if labeled:
                new_chunks.append(pd.DataFrame(labeled, columns=EXAMPLE_COLUMNS))
        pending.clear()

    # One bulk read of the lookback's feedback serves the new spans and the stored ones' late
    # feedback alike (read_from >= lookback_start). It runs beside the span pages, which do not
    # need it to be parsed: pages wait parsed (in memory) only until it is there. Feedback written
    # while the spans are read is picked up by the next run's _refresh_late_feedback.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback") as pool:
        feedback = pool.submit(
            read_feedback, phoenix, tenant_id, spec.name, lookback_start, end, log or dg.get_dagster_logger()
        )
        for page in phoenix.iter_routing_spans(tenant_id, spec.name, read_from, end):
            fetched += len(page)
            fresh = [span for span in page if _span_id(span) not in seen_ids]
            reread += len(page) - len(fresh)
            examples, rejected = parse_page(fresh, spec)
            quarantined += rejected
            pending.append(examples)
            if feedback.done():
                label_pending(feedback.result())
        annotations = feedback.result()
    label_pending(annotations)

    relabeled = _refresh_late_feedback(annotations, existing, spec, config, lookback_start)
    merged = pd.concat([existing, *new_chunks], ignore_index=True) if new_chunks else existing.copy()
    merged = (
        merged.drop_duplicates("span_id", keep="last").sort_values("start_time", kind="stable").reset_index(drop=True)
    )
    new_ids = set(merged["span_id"]) - known_ids

    quarantine = (
        pd.concat([old_quarantine, pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)], ignore_index=True)
        if old_quarantine is not None
        else pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)
    )
    quarantine = quarantine.drop_duplicates(["span_id", "reason"], keep="last").reset_index(drop=True)
    # Quarantine first: if the run dies between the writes, the examples table (the watermark's
    # source) is unchanged and the next run reads those spans again.
    artifacts.write_table(tenant_id, spec.name, QUARANTINE_TABLE, quarantine)
    table_path = artifacts.write_table(tenant_id, spec.name, TRACES_TABLE, merged)

    labeled_rows = merged[merged["provenance"].isin(LABELED_PROVENANCES)]
    return {
        "table": table_path,
        "read_from": read_from.isoformat(),
        "fetched_spans": fetched,
        "already_stored_spans": reread,
        "new_examples": len(new_ids),
        "total_examples": len(merged),
        "labeled_examples": len(labeled_rows),
        "relabeled_by_late_feedback": relabeled,
        "quarantined_this_run": len(quarantined),
        "quarantined_total": len(quarantine),
        "quarantine_reasons": dict(Counter(_reason_kind(row["reason"]) for row in quarantined)),
        "per_provenance": {key: int(value) for key, value in merged["provenance"].value_counts().items()},
        "per_label": {key: int(value) for key, value in labeled_rows["label"].value_counts().items()},
    }


def read_feedback(
    phoenix: PhoenixResource,
    tenant_id: str,
    module: str,
    start: datetime,
    end: datetime,
    log: logging.Logger | dg.DagsterLogManager,
) -> dict[str, list[dict]]:
    """The ``routing_feedback`` annotations of ``module``'s spans with ``start <= start_time < end``,
    grouped by span id. With ``phoenix.read_database_url`` (the shared Phoenix's database; never set
    for a tenant's own Phoenix) one SQL statement reads them; GraphQL resolves each field of each
    annotation on its own, the larger part of ingestion's cost above the span pages
    (docs/benchmarks.md). If the database fails, the read goes through GraphQL, logged (the message
    holds no password)."""
    if phoenix.read_database_url:
        database = PhoenixDatabase(phoenix.read_database_url, phoenix.project_prefix)
        try:
            return database.feedback_annotations_between(tenant_id, module, start, end, phoenix.timeout_s)
        except PhoenixDatabaseUnavailable as error:
            log.warning(f"feedback of {tenant_id}/{module} goes through Phoenix GraphQL this run: {error}")
    return phoenix.feedback_annotations_between(tenant_id, module, start, end)


def _refresh_late_feedback(
    annotations: Mapping[str, list[dict]],
    existing: pd.DataFrame,
    spec: RoutingModuleSpec,
    config: RoutingConfig,
    since: datetime,
) -> int:
    """People annotate after the fact: relabel stored, recent, not-human-labeled spans from the
    feedback of the lookback (``annotations``, every annotated span since ``since``)."""
    if existing.empty:
        return 0
    recent = existing[(_as_time(existing["start_time"]) >= since) & (existing["provenance"] != "human")]
    if recent.empty:
        return 0
    changed = 0
    for index, row in recent.iterrows():
        try:
            label, provenance, score = choose_label(
                row.to_dict(), annotations.get(row["span_id"], []), spec, config.min_trace_confidence
            )
        except Malformed:
            continue  # a bad late annotation leaves the stored label as it was
        if (label, provenance) != (row["label"], row["provenance"]):
            existing.loc[index, ["label", "provenance", "label_score"]] = [label, provenance, score]
            changed += 1
    return changed


def _span_id(span: object) -> str | None:
    context = span.get("context") if isinstance(span, dict) else None
    span_id = context.get("span_id") if isinstance(context, dict) else None
    return span_id if isinstance(span_id, str) else None


def _reason_kind(reason: str) -> str:
    return reason.split(" ", 1)[0].split("=", 1)[0]


def build_routing_traces(spec: RoutingModuleSpec) -> dg.AssetsDefinition:
    @lane_asset(
        spec,
        "routing_traces",
        after=("llm_annotations",),  # the teacher's labels are in Phoenix before ingestion reads them
        retry_policy=EXTERNAL_CALL_RETRY,
        kinds={"phoenix", "parquet"},
        description=f"Reads new `{spec.name}` routing spans + feedback from the tenant's Phoenix project; "
        "writes the labeled example table and the quarantine table (artifact store).",
    )
    def routing_traces(
        context: dg.AssetExecutionContext,
        phoenix: PhoenixResource,
        config_store: ConfigStoreResource,
        artifacts: ArtifactStore,
    ) -> dg.MaterializeResult:
        config = tenant_config(config_store, context.partition_key)
        source = tenant_phoenix(phoenix, config)
        with phoenix_errors(source, f"reading {config.tenant_id}/{spec.name}"):
            figures = ingest_routing_traces(source, artifacts, spec, config, log=context.log)
        context.log.info(
            f"{config.tenant_id}/{spec.name}: {figures['new_examples']} new, {figures['total_examples']} total, "
            f"{figures['quarantined_this_run']} quarantined"
        )
        return dg.MaterializeResult(metadata=_metadata(figures))

    return routing_traces


def _metadata(figures: dict) -> dict:
    metadata = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            metadata[key] = dg.MetadataValue.json(value)
        elif key == "table":
            metadata[key] = dg.MetadataValue.path(value)
        else:
            metadata[key] = value
    return metadata


routing_traces_assets = [build_routing_traces(spec) for spec in ROUTING_MODULES.values()]
