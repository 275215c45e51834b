"""``<module>/routing_traces`` against a real Phoenix server."""

import logging
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from opentelemetry.trace import Status, StatusCode

from cogniverse_assets.assets.routing_traces import (
    INGEST_OVERLAP,
    QUARANTINE_TABLE,
    TRACES_TABLE,
    ingest_routing_traces,
    routing_traces_assets,
)
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.stack import free_port
from cogniverse_resources.tenant import RoutingConfig
from cogniverse_resources.tracer import Feedback, RoutingDecision, RoutingTracer

MODALITY_TRACES = routing_traces_assets[0]


def _figures(result, asset=MODALITY_TRACES):
    (event,) = result.asset_materializations_for_node(asset.op.name)
    return {key: value.value for key, value in event.metadata.items()}


def _none(value):
    return None if pd.isna(value) else value


def _decision(query, label="video", confidence=0.9, success=True, module="modality"):
    return RoutingDecision(
        module=module,
        query=query,
        label=label,
        confidence=confidence,
        processing_time_ms=10.0,
        module_version="v0",
        success=success,
    )


def test_asset_keys_form_one_lane_per_module():
    keys = {asset.key.to_user_string() for asset in routing_traces_assets}
    assert keys == {"modality/routing_traces", "cross_modal/routing_traces", "routing/routing_traces"}
    assert {asset.group_names_by_key[asset.key] for asset in routing_traces_assets} == {
        "modality",
        "cross_modal",
        "routing",
    }


@pytest.mark.phoenix_backends
def test_second_run_reads_only_new_spans(tenant_env):
    tenant = tenant_env.add("inc")
    emit_traffic(tenant_env.phoenix, tenant, n=10, feedback_rate=0.5, seed=1, progress=False)
    first = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    assert (first["fetched_spans"], first["new_examples"], first["total_examples"]) == (10, 10, 10)

    emit_traffic(tenant_env.phoenix, tenant, n=4, feedback_rate=0.5, seed=2, progress=False)
    second = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    assert second["new_examples"] == 4 and second["total_examples"] == 14
    # The overlap re-reads the first 10 (all within INGEST_OVERLAP); they are recognised by span id.
    assert (second["fetched_spans"], second["already_stored_spans"]) == (14, 10)

    third = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    assert third["new_examples"] == 0 and third["total_examples"] == 14


@pytest.mark.phoenix_backends
def test_a_span_that_reaches_phoenix_late_is_picked_up_by_the_next_run(tenant_env):
    tenant = tenant_env.add("tardy")
    tracer = RoutingTracer(tenant_env.phoenix, tenant)
    first_ids = [tracer.record(_decision(f"on time {index}", confidence=0.9)) for index in range(3)]
    tracer.flush()
    tenant_env.phoenix.wait_for_spans(tenant, first_ids)
    first = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    assert first["new_examples"] == 3
    newest = pd.to_datetime(
        tenant_env.artifacts.read_table(tenant, "modality", TRACES_TABLE)["start_time"], utc=True, format="ISO8601"
    ).max()

    # Exported after the first run, but started 10 minutes before the newest stored span (a
    # buffered exporter); its feedback arrives with it.
    late_start = newest.to_pydatetime() - timedelta(minutes=10)
    assert late_start > datetime.now(timezone.utc) - INGEST_OVERLAP
    late = tracer.record(_decision("exported late", label="audio", confidence=0.2), start_time=late_start)
    tracer.annotate([Feedback(late, "image", "HUMAN", 1.0)])
    second = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    tracer.shutdown()
    assert (second["new_examples"], second["total_examples"], second["already_stored_spans"]) == (1, 4, 3)
    table = tenant_env.artifacts.read_table(tenant, "modality", TRACES_TABLE).set_index("span_id")
    assert (table.loc[late, "label"], table.loc[late, "provenance"]) == ("image", "human")
    assert pd.Timestamp(table.loc[late, "start_time"]) < newest


@pytest.mark.phoenix_backends
def test_label_precedence(tenant_env):
    tenant = tenant_env.add("prec", min_trace_confidence=0.7)
    tracer = RoutingTracer(tenant_env.phoenix, tenant)
    ids = {
        "human": tracer.record(_decision("human and llm disagree", label="image")),
        "llm": tracer.record(_decision("only an llm judged this", label="image")),
        "router": tracer.record(_decision("confident and successful", label="audio", confidence=0.9)),
        "low_conf": tracer.record(_decision("successful but unsure", label="audio", confidence=0.5)),
        "failed": tracer.record(_decision("confident but failed", label="audio", confidence=0.95, success=False)),
    }
    tracer.annotate(
        [
            Feedback(ids["human"], "video", "HUMAN", 1.0),
            Feedback(ids["human"], "text", "LLM", 0.8),
            Feedback(ids["llm"], "document", "LLM", 0.7),
        ]
    )
    tracer.shutdown()
    tenant_env.phoenix.wait_for_spans(tenant, ids.values())
    figures = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    table = tenant_env.artifacts.read_table(tenant, "modality", TRACES_TABLE).set_index("span_id")
    got = {
        name: (_none(table.loc[span_id, "label"]), table.loc[span_id, "provenance"]) for name, span_id in ids.items()
    }
    assert got == {
        "human": ("video", "human"),
        "llm": ("document", "llm"),
        "router": ("audio", "router"),
        "low_conf": (None, "unlabeled"),
        "failed": (None, "unlabeled"),
    }
    assert figures["per_provenance"] == {"human": 1, "llm": 1, "router": 1, "unlabeled": 2}
    assert figures["labeled_examples"] == 3


@pytest.mark.phoenix_backends
def test_late_feedback_relabels_stored_examples(tenant_env):
    tenant = tenant_env.add("late")
    tracer = RoutingTracer(tenant_env.phoenix, tenant)
    span_id = tracer.record(_decision("annotated tomorrow", label="audio", confidence=0.2))
    tracer.flush()
    tenant_env.phoenix.wait_for_spans(tenant, [span_id])
    tenant_env.materialize([MODALITY_TRACES], tenant)
    tracer.annotate([Feedback(span_id, "image", "HUMAN", 1.0)])
    figures = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    table = tenant_env.artifacts.read_table(tenant, "modality", TRACES_TABLE).set_index("span_id")
    assert (table.loc[span_id, "label"], table.loc[span_id, "provenance"]) == ("image", "human")
    assert figures["relabeled_by_late_feedback"] == 1
    tracer.shutdown()


@pytest.mark.phoenix_backends
def test_hostile_spans_are_quarantined_with_reasons(tenant_env):
    tenant = tenant_env.add("hostile")
    tracer = RoutingTracer(tenant_env.phoenix, tenant)
    raw = tracer._tracer  # bypass RoutingDecision to write spans that break the contract
    hostile = [
        {tc.MODULE: "modality", tc.MODALITY: "video"},  # no query
        {tc.MODULE: "modality", tc.QUERY: "  ", tc.MODALITY: "video"},  # empty query
        {tc.MODULE: "modality", tc.QUERY: "a hologram please", tc.MODALITY: "hologram"},  # label outside the set
        {tc.MODULE: "modality", tc.QUERY: "typed wrong", tc.MODALITY: "video", tc.CONFIDENCE: "high"},  # wrong type
        {tc.MODULE: "modality", tc.QUERY: "x" * 5000, tc.MODALITY: "video"},  # absurd size
        {tc.MODULE: "modality", tc.QUERY: "sat", tc.MODALITY: "video", tc.USER_SATISFACTION: 99},  # out of range
    ]
    hostile_ids = []
    for attributes in hostile:
        with raw.start_as_current_span(tc.SPAN_NAME, attributes=attributes) as span:
            span.set_status(Status(StatusCode.OK))
            hostile_ids.append(format(span.get_span_context().span_id, "016x"))
    good = tracer.record(_decision("a perfectly fine query"))
    bad_feedback = tracer.record(_decision("annotated with nonsense"))
    tracer.annotate([Feedback(bad_feedback, "smell-o-vision", "HUMAN", 1.0)])
    tracer.shutdown()
    tenant_env.phoenix.wait_for_spans(tenant, hostile_ids + [good])

    figures = _figures(tenant_env.materialize([MODALITY_TRACES], tenant))
    assert figures["quarantined_this_run"] == 7
    assert figures["total_examples"] == 1
    quarantine = tenant_env.artifacts.read_table(tenant, "modality", QUARANTINE_TABLE)
    assert set(quarantine["span_id"]) == set(hostile_ids) | {bad_feedback}
    reasons = " | ".join(quarantine["reason"])
    for fragment in (
        "routing.query is missing",
        "not a canonical modality label",
        "routing.confidence is not a finite number",
        "5000 characters",
        "user.satisfaction",
        "routing_feedback label 'smell-o-vision'",
    ):
        assert fragment in reasons
    assert sum(figures["quarantine_reasons"].values()) == 7


@pytest.mark.phoenix_backends
def test_tenants_are_isolated(tenant_env):
    tenant_a, tenant_b = tenant_env.add("iso-a"), tenant_env.add("iso-b")
    emit_traffic(tenant_env.phoenix, tenant_a, n=5, feedback_rate=1.0, seed=5, progress=False)
    emit_traffic(tenant_env.phoenix, tenant_b, n=7, feedback_rate=1.0, seed=6, progress=False)
    for tenant in (tenant_a, tenant_b):
        tenant_env.materialize(routing_traces_assets, tenant)
    client = tenant_env.phoenix.client()
    for tenant, other in ((tenant_a, tenant_b), (tenant_b, tenant_a)):
        other_ids = {
            s["context"]["span_id"]
            for s in client.spans.get_spans(project_identifier=tenant_env.phoenix.project_name(other), limit=1000)
        }
        for module in ("modality", "cross_modal", "routing"):
            table = tenant_env.artifacts.read_table(tenant, module, TRACES_TABLE)
            assert len(table) == (5 if tenant == tenant_a else 7)
            assert other_ids.isdisjoint(table["span_id"])


def test_phoenix_down_fails_cleanly_and_leaves_the_table_unchanged(tenant_env):
    tenant = tenant_env.add("down")
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=0.0, seed=9, progress=False)
    tenant_env.materialize([MODALITY_TRACES], tenant)
    path = tenant_env.artifacts.path(tenant, "modality", f"{TRACES_TABLE}.parquet")
    before = path.read_bytes()
    dead = PhoenixResource(endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(Exception):
        from cogniverse_assets.assets.routing_traces import ingest_routing_traces
        from cogniverse_assets.modules.registry import get_module

        ingest_routing_traces(
            dead, tenant_env.artifacts, get_module("modality"), tenant_env.config_store.store().get(tenant)
        )
    assert path.read_bytes() == before


def test_unknown_tenant_fails_without_retry(tenant_env):
    tenant_env.instance.add_dynamic_partitions("tenants", ["ghost"])
    result = tenant_env.materialize([MODALITY_TRACES], "ghost", raise_on_error=False)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "unknown tenant 'ghost'" in str(failure.event_specific_data.error)
    assert not any(event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events)


def test_phoenix_killed_mid_ingestion_fails_cleanly_and_a_retry_succeeds(tenant_env, tmp_path):
    from cogniverse_assets.assets.routing_traces import ingest_routing_traces
    from cogniverse_assets.modules.registry import get_module
    from cogniverse_resources import stack

    port, grpc_port = free_port(), free_port()
    service = stack.phoenix_service(
        working_dir=tmp_path / "working", port=port, grpc_port=grpc_port, directory=tmp_path
    )
    service.start()
    try:
        own = PhoenixResource(endpoint=stack.phoenix_url(port), timeout_s=5)
        tenant = tenant_env.add("killed")
        emit_traffic(own, tenant, n=10, feedback_rate=0.0, seed=31, progress=False, modules=["modality"])
        tenant_env.materialize([MODALITY_TRACES], tenant, phoenix=own)
        path = tenant_env.artifacts.path(tenant, "modality", f"{TRACES_TABLE}.parquet")
        before = path.read_bytes()
        emit_traffic(own, tenant, n=60, feedback_rate=0.5, seed=32, progress=False, modules=["modality"])

        class DiesAfterFirstPage(PhoenixResource):
            """The real server, stopped while the second page is being read."""

            def iter_routing_spans(self, *args, **kwargs):
                for number, page in enumerate(super().iter_routing_spans(*args, **{**kwargs, "page_size": 20})):
                    yield page
                    if number == 0:
                        service.stop()

        config = tenant_env.config_store.store().get(tenant)
        with pytest.raises(Exception):
            ingest_routing_traces(
                DiesAfterFirstPage(endpoint=own.endpoint, timeout_s=5),
                tenant_env.artifacts,
                get_module("modality"),
                config,
            )
        assert not service.status().healthy
        assert path.read_bytes() == before  # the stored table is untouched
        assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

        service.start()  # Phoenix is back (same SQLite working dir)
        figures = _figures(tenant_env.materialize([MODALITY_TRACES], tenant, phoenix=own))
        assert figures["total_examples"] == 70 and figures["new_examples"] == 60
    finally:
        service.stop()


def _ingest(phoenix: PhoenixResource, tenant: str, root, log=None) -> pd.DataFrame:
    """One ``routing_traces`` run of the tenant's modality lane into its own artifact store."""
    artifacts = ArtifactStore(root=str(root))
    ingest_routing_traces(phoenix, artifacts, ROUTING_MODULES["modality"], RoutingConfig(tenant_id=tenant), log=log)
    return artifacts.read_table(tenant, "modality", TRACES_TABLE)


@pytest.mark.phoenix_backends
def test_with_phoenixs_database_feedback_is_read_in_sql_and_labels_as_graphql_does(
    phoenix, phoenix_database, tmp_path, monkeypatch
):
    tenant = f"db-feedback-{uuid.uuid4().hex[:6]}"
    emit_traffic(phoenix, tenant, n=30, feedback_rate=0.5, seed=4, modules=["modality"], progress=False)
    through_graphql = _ingest(phoenix, tenant, tmp_path / "graphql")
    assert set(through_graphql["provenance"]) >= {"human", "llm"}  # the feedback decided labels

    def no_graphql(*args, **kwargs):
        raise AssertionError("the feedback went through GraphQL")

    monkeypatch.setattr(PhoenixResource, "feedback_annotations_between", no_graphql)
    database = PhoenixResource(endpoint=phoenix.endpoint, read_database_url=phoenix_database)
    through_database = _ingest(database, tenant, tmp_path / "database")
    pd.testing.assert_frame_equal(through_database, through_graphql)


def test_a_failing_phoenix_database_falls_back_to_graphql_and_logs_no_password(phoenix_postgres, tmp_path, caplog):
    tenant = f"pg-fallback-{uuid.uuid4().hex[:6]}"
    emit_traffic(phoenix_postgres, tenant, n=10, feedback_rate=1.0, seed=5, modules=["modality"], progress=False)
    expected = _ingest(phoenix_postgres, tenant, tmp_path / "graphql")
    dead = PhoenixResource(
        endpoint=phoenix_postgres.endpoint, read_database_url=f"postgresql://reader:s3cret-pw@127.0.0.1:{free_port()}/x"
    )
    logger = logging.getLogger("test-routing-traces")
    with caplog.at_level(logging.WARNING, logger="test-routing-traces"):
        fallen_back = _ingest(dead, tenant, tmp_path / "fallback", log=logger)
    pd.testing.assert_frame_equal(fallen_back, expected)
    assert f"feedback of {tenant}/modality goes through Phoenix GraphQL this run" in caplog.text
    assert "postgresql://***@127.0.0.1" in caplog.text and "s3cret-pw" not in caplog.text
