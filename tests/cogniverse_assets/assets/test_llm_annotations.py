"""``<module>/llm_annotations`` against a real Phoenix server and, where the teacher answers, the real
local LM. Every figure the asset reports is checked against what Phoenix holds afterwards."""

from collections import Counter

import pytest

from cogniverse_assets.assets.llm_annotations import (
    RECORD_TABLE,
    TEACHER_IDENTIFIER,
    TeacherUnavailable,
    annotate_spans,
    llm_annotations_assets,
)
from cogniverse_assets.modules.registry import get_module
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.stack import free_port
from cogniverse_resources.tracer import Feedback, RoutingTracer
from tests.cogniverse_assets.assets.test_routing_traces import _decision

MODALITY_ANNOTATIONS = llm_annotations_assets[0]
QUERIES = {
    "human": ["watch the penalty shootout replay", "photos of the aurora over iceland", "podcast about chess"],
    "other_llm": ["pdf of the annual report"],
    "confident": ["clips from the keynote", "diagram of a heat pump"],
    "unsure": [
        "recording of yesterday's earnings call",
        "screenshots of the new dashboard",
        "slides from the design review",
        "definition of entropy",
        "footage of the rocket landing",
        "manual for the espresso machine",
        "article about sourdough starters",
    ],
}


def _metadata(result):
    (event,) = result.asset_materializations_for_node(MODALITY_ANNOTATIONS.op.name)
    return {key: value.value for key, value in event.metadata.items()}


def _annotations(phoenix: PhoenixResource, tenant: str, span_ids) -> dict[str, list[dict]]:
    """Every routing_feedback annotation of the spans, read straight from Phoenix."""
    found = phoenix.client().spans.get_span_annotations(
        span_ids=list(span_ids),
        project_identifier=phoenix.project_name(tenant),
        include_annotation_names=[tc.FEEDBACK_ANNOTATION],
        limit=10_000,
    )
    grouped: dict[str, list[dict]] = {span_id: [] for span_id in span_ids}
    for annotation in found:
        grouped[annotation["span_id"]].append(dict(annotation))
    return grouped


def _teacher(annotations: list[dict]) -> list[str]:
    return [
        a["result"]["label"]
        for a in annotations
        if a["annotator_kind"] == "LLM" and a["identifier"] == TEACHER_IDENTIFIER
    ]


def _human(annotations: list[dict]) -> str | None:
    labels = [a["result"]["label"] for a in annotations if a["annotator_kind"] == "HUMAN"]
    return labels[0] if labels else None


def _record_spans(tenant_env, tenant, queries, confidence, success=True, feedback_kind=None, labels=None):
    tracer = RoutingTracer(tenant_env.phoenix, tenant)
    ids = [tracer.record(_decision(query, label="text", confidence=confidence, success=success)) for query in queries]
    if feedback_kind:
        tracer.annotate([Feedback(span_id, label, feedback_kind) for span_id, label in zip(ids, labels)])
    tracer.flush()
    tenant_env.phoenix.wait_for_spans(tenant, ids)
    tracer.shutdown()
    return ids


@pytest.mark.lm
def test_budget_no_overwrite_no_double_labeling_and_agreement(tenant_env, local_lm):
    tenant = tenant_env.add("teach", llm_annotation_budget=5, min_trace_confidence=0.7)
    spans = {
        "human": _record_spans(
            tenant_env, tenant, QUERIES["human"], 0.3, feedback_kind="HUMAN", labels=["video", "image", "audio"]
        ),
        "other_llm": _record_spans(
            tenant_env, tenant, QUERIES["other_llm"], 0.3, feedback_kind="LLM", labels=["document"]
        ),
        "confident": _record_spans(tenant_env, tenant, QUERIES["confident"], 0.9),
        # unlabeled for ingestion: low or no confidence, or a failed agent despite a confident answer
        "unsure": _record_spans(tenant_env, tenant, QUERIES["unsure"][:4], 0.3)
        + _record_spans(tenant_env, tenant, QUERIES["unsure"][4:6], None)
        + _record_spans(tenant_env, tenant, QUERIES["unsure"][6:], 0.95, success=False),
    }
    everything = [span_id for ids in spans.values() for span_id in ids]
    lm = LanguageModelResource()

    first = _metadata(tenant_env.materialize([MODALITY_ANNOTATIONS], tenant, lm=lm))
    # Budget 5: one call in five measures agreement on a human-labeled span, four label spans.
    assert (first["lm_calls"], first["agreement_samples"], first["labeled"]) == (5, 1, 4)
    assert first["skipped"] == {"human_label": 3, "llm_label": 1, "confident_router_label": 2, "over_budget": 3}
    held = _annotations(tenant_env.phoenix, tenant, everything)
    first_labeled = {span_id for span_id in everything if _teacher(held[span_id])}
    assert len(first_labeled) == first["labeled"] and first_labeled <= set(spans["unsure"])
    assert first["labeled_per_label"] == dict(Counter(_teacher(held[span_id])[0] for span_id in first_labeled))
    # Human-labeled spans get no LLM annotation at all; the other judge's span keeps only its own.
    assert all(a["annotator_kind"] == "HUMAN" for span_id in spans["human"] for a in held[span_id])
    assert [a["identifier"] for a in held[spans["other_llm"][0]]] == ["llm"]
    assert not any(held[span_id] for span_id in spans["confident"])

    # The agreement sample: the teacher's stored answer against the person's label in Phoenix.
    record = tenant_env.artifacts.read_table(tenant, "modality", RECORD_TABLE)
    (sample,) = record[record["source"] == "sample"].itertuples()
    assert sample.span_id in spans["human"]
    human = _human(held[sample.span_id])
    agreed = int(sample.llm_label == human)
    assert first["agreement"]["sample"] == {
        "n": 1,
        "agreed": agreed,
        "rate": float(agreed),
        "per_label": {human: {"n": 1, "agreed": agreed, "rate": float(agreed)}},
    }

    # People label two of the teacher's spans afterwards: one as the teacher did, one otherwise.
    agree_span, disagree_span = sorted(first_labeled)[:2]
    teacher_label = _teacher(held[disagree_span])[0]
    other = next(label for label in tc.MODALITIES if label != teacher_label)
    tracer = RoutingTracer(tenant_env.phoenix, tenant)
    tracer.annotate(
        [Feedback(agree_span, _teacher(held[agree_span])[0], "HUMAN"), Feedback(disagree_span, other, "HUMAN")],
        spans_ingested=True,
    )
    tracer.shutdown()
    new = _record_spans(tenant_env, tenant, ["interview audio with the mayor", "scanned contract pages"], 0.2)
    everything += new

    second = _metadata(tenant_env.materialize([MODALITY_ANNOTATIONS], tenant, lm=lm))
    held = _annotations(tenant_env.phoenix, tenant, everything)
    labeled = {span_id for span_id in everything if _teacher(held[span_id])}
    assert (second["lm_calls"], second["agreement_samples"], second["labeled"]) == (5, 1, 4)
    assert len(labeled) == len(first_labeled) + second["labeled"] and first_labeled <= labeled
    assert labeled - first_labeled <= set(spans["unsure"]) | set(new)
    assert all(len(_teacher(held[span_id])) == 1 for span_id in labeled)  # nobody labeled twice
    assert second["skipped"] == {"human_label": 5, "llm_label": 3, "confident_router_label": 2, "over_budget": 1}

    # Agreement after labeling, recomputed from Phoenix: spans holding both a human and a teacher label.
    both = [(_human(held[s]), _teacher(held[s])[0]) for s in everything if _human(held[s]) and _teacher(held[s])]
    per_label: dict[str, dict] = {}
    for human, teacher in both:
        figures = per_label.setdefault(human, {"n": 0, "agreed": 0})
        figures["n"] += 1
        figures["agreed"] += int(human == teacher)
    for figures in per_label.values():
        figures["rate"] = round(figures["agreed"] / figures["n"], 4)
    assert len(both) == 2 and sum(human == teacher for human, teacher in both) == 1
    assert second["agreement"]["after_labeling"] == {"n": 2, "agreed": 1, "rate": 0.5, "per_label": per_label}
    assert second["agreement"]["sample"]["n"] == 2


def test_budget_zero_is_off_and_calls_neither_phoenix_nor_the_lm(tenant_env):
    tenant = tenant_env.add("off")
    assert tenant_env.config_store.store().get(tenant).llm_annotation_budget == 0
    # Nothing listens on either port: any call would fail the step.
    dead_phoenix = PhoenixResource(endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    dead_lm = LanguageModelResource(student_api_base=f"http://127.0.0.1:{free_port()}/v1", num_retries=0)
    result = tenant_env.materialize([MODALITY_ANNOTATIONS], tenant, phoenix=dead_phoenix, lm=dead_lm)
    assert _metadata(result) == {"status": "off", "reason": "llm_annotation_budget is 0", "labeled": 0, "lm_calls": 0}
    assert tenant_env.artifacts.read_table(tenant, "modality", RECORD_TABLE) is None


def test_a_failing_teacher_raises_a_clear_error_and_writes_nothing(tenant_env):
    tenant = tenant_env.add("mute", llm_annotation_budget=3)
    ids = _record_spans(tenant_env, tenant, QUERIES["unsure"][:2], 0.3)
    dead_lm = LanguageModelResource(student_api_base=f"http://127.0.0.1:{free_port()}/v1", num_retries=0)
    config = tenant_env.config_store.store().get(tenant)
    with pytest.raises(TeacherUnavailable, match=f"teacher LM .* failed while labeling {tenant}/modality span"):
        annotate_spans(tenant_env.phoenix, tenant_env.artifacts, dead_lm, get_module("modality"), config)
    assert not any(_annotations(tenant_env.phoenix, tenant, ids).values())
    assert tenant_env.artifacts.read_table(tenant, "modality", RECORD_TABLE).empty


def test_a_refused_tenant_endpoint_fails_without_retry(tenant_env):
    tenant = tenant_env.add("elsewhere", llm_annotation_budget=3, phoenix_endpoint="http://phoenix.elsewhere.example")
    guarded = PhoenixResource(endpoint=tenant_env.phoenix.endpoint, allowed_hosts="phoenix.acme.example")
    result = tenant_env.materialize(
        [MODALITY_ANNOTATIONS], tenant, raise_on_error=False, phoenix=guarded, lm=LanguageModelResource()
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "is not allowed by COGNIVERSE_PHOENIX_ALLOWED_HOSTS" in str(failure.event_specific_data.error)
    assert not any(event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events)
