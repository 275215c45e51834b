from collections import Counter

import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources import trace_contract as tc


def test_noisy_traffic_lands_with_feedback(phoenix):
    report = emit_traffic(phoenix, "traffic-t", n=12, feedback_rate=0.5, seed=7, progress=False)
    assert (report.requests, report.spans) == (12, 36)
    assert 0 < report.annotated < 36
    client = phoenix.client()
    project = phoenix.project_name("traffic-t")
    spans = client.spans.get_spans(project_identifier=project, name=tc.SPAN_NAME, limit=1000)
    assert len(spans) == 36
    assert Counter(s["attributes"][tc.MODULE] for s in spans) == {"modality": 12, "cross_modal": 12, "routing": 12}
    train_queries = {row["query"] for row in load_queries("train")}
    assert {s["attributes"][tc.QUERY] for s in spans} <= train_queries  # never the held-out split
    annotations = client.spans.get_span_annotations(
        spans=spans, project_identifier=project, include_annotation_names=[tc.FEEDBACK_ANNOTATION]
    )
    assert len(annotations) == report.annotated
    labels_by_module = {s["context"]["span_id"]: s["attributes"][tc.MODULE] for s in spans}
    for annotation in annotations:
        module = labels_by_module[annotation["span_id"]]
        assert annotation["result"]["label"] in tc.MODULE_LABELS[module]


def test_traffic_rejects_bad_arguments(phoenix):
    with pytest.raises(ValueError, match="feedback-rate"):
        emit_traffic(phoenix, "traffic-t", n=1, feedback_rate=2.0, progress=False)
    with pytest.raises(ValueError, match="invalid tenant id"):
        emit_traffic(phoenix, "Bad|Tenant", n=1, feedback_rate=0.1, progress=False)
