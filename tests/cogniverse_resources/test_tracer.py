"""The trace contract, written by the tracer and read back from a real Phoenix server."""

import pytest

from cogniverse_resources import trace_contract as tc
from cogniverse_resources.tracer import Feedback, RoutingDecision, RoutingTracer


def _decision(**overrides):
    values = dict(
        module="modality",
        query="highlights of the final",
        label="video",
        confidence=0.9,
        processing_time_ms=12.5,
        module_version="v1",
        success=True,
        result_count=3,
        satisfaction=5,
    )
    values.update(overrides)
    return RoutingDecision(**values)


def test_attributes_cover_the_contract():
    attributes = _decision().attributes("acme")
    for key in (
        tc.QUERY,
        tc.MODULE,
        tc.MODALITY,
        tc.CONFIDENCE,
        tc.PROCESSING_TIME_MS,
        tc.MODULE_VERSION,
        tc.TENANT_ID,
        tc.AGENT_SUCCESS,
        tc.AGENT_RESULT_COUNT,
        tc.USER_SATISFACTION,
    ):
        assert key in attributes
    cross = _decision(module="cross_modal", label="rrf", detected_modalities=["video", "text"]).attributes("acme")
    assert cross[tc.FUSION_STRATEGY] == "rrf" and cross[tc.NEEDS_FUSION] is True
    with pytest.raises(ValueError, match="unknown routing module"):
        _decision(module="vibes").attributes("acme")
    key = "ab" * 32
    assert _decision(program_key=key).attributes("acme")[tc.PROGRAM_KEY] == key
    assert tc.PROGRAM_KEY not in _decision(program_key=key, path="fast").attributes("acme")
    assert tc.PROGRAM_KEY not in _decision().attributes("acme")


def test_project_name_uses_prefix(monkeypatch):
    assert tc.project_name("acme") == "cogniverse-acme"
    monkeypatch.setenv("PHOENIX_PROJECT_PREFIX", "prod-")
    assert tc.project_name("acme") == "prod-acme"


@pytest.mark.phoenix_backends
def test_spans_and_feedback_land_in_the_tenants_project_only(phoenix):
    tracer_a = RoutingTracer(phoenix, "tracer-a")
    tracer_b = RoutingTracer(phoenix, "tracer-b")
    with tracer_a.request("highlights of the final"):
        span_ok = tracer_a.record(_decision())
        span_err = tracer_a.record(_decision(module="routing", label="video_search_agent", error="agent timeout"))
    span_b = tracer_b.record(_decision(query="tenant b query"))
    assert (
        tracer_a.annotate(
            [Feedback(span_ok, "video", "HUMAN", 1.0), Feedback(span_err, "summarizer_agent", "LLM", 0.7)]
        )
        == 2
    )
    tracer_b.flush()
    phoenix.wait_for_spans("tracer-b", [span_b])

    client = phoenix.client()
    spans = client.spans.get_spans(project_identifier=phoenix.project_name("tracer-a"), name=tc.SPAN_NAME, limit=100)
    by_id = {span["context"]["span_id"]: span for span in spans}
    assert set(by_id) == {span_ok, span_err}
    ok = by_id[span_ok]
    assert ok["attributes"][tc.MODALITY] == "video"
    assert ok["attributes"][tc.TENANT_ID] == "tracer-a"
    assert ok["status_code"] == "OK" and by_id[span_err]["status_code"] == "ERROR"
    assert ok["parent_id"]  # grouped under the request span

    annotations = client.spans.get_span_annotations(
        span_ids=[span_ok, span_err],
        project_identifier=phoenix.project_name("tracer-a"),
        include_annotation_names=[tc.FEEDBACK_ANNOTATION],
    )
    labels = {a["span_id"]: (a["result"]["label"], a["annotator_kind"]) for a in annotations}
    assert labels == {span_ok: ("video", "HUMAN"), span_err: ("summarizer_agent", "LLM")}

    b_queries = [
        s["attributes"][tc.QUERY]
        for s in client.spans.get_spans(project_identifier=phoenix.project_name("tracer-b"), limit=100)
    ]
    assert "highlights of the final" not in b_queries
    tracer_a.shutdown()
    tracer_b.shutdown()
