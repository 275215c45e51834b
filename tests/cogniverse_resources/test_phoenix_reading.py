"""PhoenixResource's reads (span pages, feedback in bulk and by span id) against real Phoenix
servers, on SQLite and on Postgres."""

from datetime import datetime, timedelta, timezone

import pytest

from cogniverse_resources import trace_contract as tc
from cogniverse_resources.tracer import Feedback, RoutingDecision, RoutingTracer

pytestmark = pytest.mark.phoenix_backends


def _decision(query: str, module: str = "modality", label: str = "video") -> RoutingDecision:
    return RoutingDecision(
        module=module,
        query=query,
        label=label,
        confidence=0.9,
        processing_time_ms=1.0,
        module_version="v0",
        success=True,
    )


def test_bulk_feedback_is_the_per_span_feedback_of_the_module_and_time_range(phoenix):
    tenant = "bulk-feedback"
    tracer = RoutingTracer(phoenix, tenant)
    now = datetime.now(timezone.utc)
    old = tracer.record(_decision("long ago"), start_time=now - timedelta(hours=5))
    modality = [tracer.record(_decision(f"modality {index}")) for index in range(7)]
    routing = tracer.record(_decision("another module", module="routing", label="video_search_agent"))
    feedback = [
        Feedback(old, "image", "HUMAN", 1.0),
        Feedback(routing, "summarizer_agent", "HUMAN", 1.0),
        *(Feedback(span_id, "audio", "HUMAN", 1.0) for span_id in modality[:5]),
        Feedback(modality[0], "text", "LLM", 0.4),  # a second annotator on one span
    ]
    tracer.annotate(feedback)
    tracer.flush()
    phoenix.wait_for_spans(tenant, [old, routing, *modality])
    # An annotation under another name on an unannotated span: neither read returns it.
    phoenix.client().spans.log_span_annotations(
        span_annotations=[
            {"name": "helpfulness", "span_id": modality[6], "annotator_kind": "HUMAN", "result": {"label": "good"}}
        ],
        sync=True,
    )
    tracer.shutdown()

    start, end = now - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(seconds=1)
    bulk = phoenix.feedback_annotations_between(tenant, "modality", start, end, page_size=2)  # 3 pages
    by_id = phoenix.feedback_annotations(tenant, modality)
    assert set(bulk) == set(modality[:5]) == set(by_id)
    for span_id, annotations in by_id.items():
        # The bulk read returns the keys labeling reads, with the values the by-id read has.
        expected = [
            {
                "span_id": a["span_id"],
                "name": a["name"],
                "annotator_kind": a["annotator_kind"],
                "result": {"label": a["result"]["label"], "score": a["result"]["score"]},
                "identifier": a["identifier"],
                "updated_at": a["updated_at"],
            }
            for a in annotations
        ]
        assert sorted(bulk[span_id], key=repr) == sorted(expected, key=repr)
    assert {(a["result"]["label"], a["annotator_kind"]) for a in bulk[modality[0]]} == {
        ("audio", "HUMAN"),
        ("text", "LLM"),
    }
    assert all(a["name"] == tc.FEEDBACK_ANNOTATION for annotations in bulk.values() for a in annotations)
    # The time range is the spans' start time: the old span's feedback is outside it, then inside.
    wider = phoenix.feedback_annotations_between(tenant, "modality", now - timedelta(hours=6), end)
    assert set(wider) == {old, *modality[:5]}
    assert set(phoenix.feedback_annotations_between(tenant, "routing", start, end)) == {routing}


def test_bulk_feedback_of_a_tenant_without_a_project_is_empty(phoenix):
    now = datetime.now(timezone.utc)
    assert phoenix.feedback_annotations_between("never-emitted", "modality", now - timedelta(hours=1), now) == {}


def test_span_pages_hold_one_module_in_the_time_range_newest_first(phoenix):
    tenant = "span-pages"
    tracer = RoutingTracer(phoenix, tenant)
    ids = [tracer.record(_decision(f"page {index}")) for index in range(5)]
    other = tracer.record(_decision("routing one", module="routing", label="video_search_agent"))
    tracer.shutdown()
    phoenix.wait_for_spans(tenant, [*ids, other])
    now = datetime.now(timezone.utc)
    pages = list(phoenix.iter_routing_spans(tenant, "modality", now - timedelta(hours=1), now, page_size=2))
    assert [len(page) for page in pages] == [2, 2, 1]
    spans = [span for page in pages for span in page]
    assert [span["context"]["span_id"] for span in spans] == ids[::-1]
    starts = [span["start_time"] for span in spans]
    assert starts == sorted(starts, reverse=True)
