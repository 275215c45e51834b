"""From Phoenix spans to labeled examples: validation, quarantine reasons and label precedence.

Pure functions over the trace contract, shared by ingestion and its property-based tests.

Label precedence for one span (its ``provenance``):
  1. ``human``  — a HUMAN ``routing_feedback`` annotation (the most recent one);
  2. ``llm``    — an LLM ``routing_feedback`` annotation;
  3. ``router`` — the router's own answer, only if the downstream agent succeeded and the router's
                  confidence is at least the tenant's ``min_trace_confidence``;
  4. ``unlabeled`` — kept and counted, never silently dropped.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_resources import trace_contract as tc

PROVENANCES = ("human", "llm", "router", "unlabeled", "synthetic")
LABELED_PROVENANCES = ("human", "llm", "router")
MAX_LIST_ITEMS = 50
MAX_ITEM_CHARS = 200
MAX_RAW_CHARS = 10_000

EXAMPLE_COLUMNS = [
    "span_id",
    "trace_id",
    "start_time",
    "module",
    "query",
    "detected_modalities",
    "entities",
    "router_label",
    "confidence",
    "processing_time_ms",
    "success",
    "satisfaction",
    "status",
    "module_version",
    "router_program_key",
    "label",
    "provenance",
    "label_score",
]
QUARANTINE_COLUMNS = ["span_id", "module", "reason", "raw", "start_time"]


class Malformed(ValueError):
    """The span breaks the trace contract; the message is the quarantine reason."""


def _string_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # OTel exporters may flatten arrays to JSON strings.
        try:
            value = json.loads(value)
        except ValueError:
            raise Malformed(f"{field} is not a list") from None
    if not isinstance(value, (list, tuple)):
        raise Malformed(f"{field} is not a list")
    if len(value) > MAX_LIST_ITEMS:
        raise Malformed(f"{field} has {len(value)} items (max {MAX_LIST_ITEMS})")
    if not all(isinstance(item, str) and len(item) <= MAX_ITEM_CHARS for item in value):
        raise Malformed(f"{field} must hold strings of at most {MAX_ITEM_CHARS} characters")
    return list(value)


def _number(value: Any, field: str, low: float | None = None, high: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Malformed(f"{field} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Malformed(f"{field}={value} outside [{low}, {high}]")
    return float(value)


def _optional_bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise Malformed(f"{field} is not a boolean")


def parse_span(span: Mapping[str, Any], spec: RoutingModuleSpec) -> dict:
    """Validate one span of ``spec``'s module and return an (unlabeled) example row.

    Raises ``Malformed`` with the quarantine reason when the span breaks the contract.
    """
    if not isinstance(span, Mapping):
        raise Malformed("span is not an object")
    context = span.get("context")
    span_id = context.get("span_id") if isinstance(context, Mapping) else None
    if not isinstance(span_id, str) or not span_id:
        raise Malformed("span has no span_id")
    attributes = span.get("attributes")
    if not isinstance(attributes, Mapping):
        raise Malformed("span has no attributes")
    if attributes.get(tc.MODULE) != spec.name:
        raise Malformed(f"routing.module is {attributes.get(tc.MODULE)!r}, expected {spec.name!r}")
    query = attributes.get(tc.QUERY)
    if not isinstance(query, str) or not query.strip():
        raise Malformed("routing.query is missing or empty")
    if len(query) > tc.MAX_QUERY_CHARS:
        raise Malformed(f"routing.query has {len(query)} characters (max {tc.MAX_QUERY_CHARS})")
    router_label = attributes.get(spec.decision_attribute)
    if router_label is not None and router_label not in spec.labels:
        raise Malformed(f"{spec.decision_attribute}={str(router_label)[:80]!r} is not a canonical {spec.name} label")
    satisfaction = _number(attributes.get(tc.USER_SATISFACTION), tc.USER_SATISFACTION, *tc.SATISFACTION_RANGE)
    start_time = span.get("start_time")
    if not isinstance(start_time, str):
        raise Malformed("span has no start_time")
    program_key = _program_key(attributes)
    return {
        "span_id": span_id,
        "trace_id": str(context.get("trace_id") or ""),
        "start_time": start_time,
        "module": spec.name,
        "query": query.strip(),
        "detected_modalities": _string_list(attributes.get(tc.DETECTED_MODALITIES), tc.DETECTED_MODALITIES),
        "entities": _string_list(attributes.get(tc.ENTITIES), tc.ENTITIES),
        "router_label": router_label,
        "confidence": _number(attributes.get(tc.CONFIDENCE), tc.CONFIDENCE, 0.0, 1.0),
        "processing_time_ms": _number(attributes.get(tc.PROCESSING_TIME_MS), tc.PROCESSING_TIME_MS, 0.0, 3_600_000.0),
        "success": _optional_bool(attributes.get(tc.AGENT_SUCCESS), tc.AGENT_SUCCESS),
        "satisfaction": satisfaction,
        "status": str(span.get("status_code") or "UNSET"),
        "module_version": str(attributes.get(tc.MODULE_VERSION) or ""),
        # Only an LM-path answer is a program's answer (a fast-path one is the classifier's).
        "router_program_key": program_key if router_label is not None and attributes.get(tc.PATH) != "fast" else None,
        "label": None,
        "provenance": "unlabeled",
        "label_score": None,
    }


def _program_key(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get(tc.PROGRAM_KEY)
    if value is None:
        return None
    if not isinstance(value, str) or not tc.PROGRAM_KEY_PATTERN.fullmatch(value):
        raise Malformed(f"{tc.PROGRAM_KEY} is not {tc.PROGRAM_KEY_CHARS} lowercase hex characters")
    return value


def raw_excerpt(span: Any) -> str:
    try:
        text = json.dumps(span, default=str)
    except (TypeError, ValueError):
        text = repr(span)
    return text[:MAX_RAW_CHARS]


def choose_label(
    example: Mapping[str, Any],
    annotations: Sequence[Mapping[str, Any]],
    spec: RoutingModuleSpec,
    min_trace_confidence: float,
) -> tuple[str | None, str, float | None]:
    """Return ``(label, provenance, score)`` by the precedence in the module docstring.

    Raises ``Malformed`` if a feedback annotation's label is not canonical for the module.
    """
    best: dict[str, tuple[str, Any, float | None]] = {}
    for annotation in annotations:
        if not isinstance(annotation, Mapping):
            raise Malformed("routing_feedback annotation is not an object")
        result = annotation.get("result")
        result = {} if result is None else result
        if not isinstance(result, Mapping):
            raise Malformed("routing_feedback result is not an object")
        label = result.get("label")
        if label is None:
            continue
        if label not in spec.labels:
            raise Malformed(f"routing_feedback label {str(label)[:80]!r} is not a canonical {spec.name} label")
        kind = str(annotation.get("annotator_kind", "")).upper()
        provenance = {"HUMAN": "human", "LLM": "llm"}.get(kind)
        if provenance is None:
            continue
        stamp = annotation.get("updated_at") or annotation.get("created_at") or ""
        stamp = stamp if isinstance(stamp, str) else ""
        score = result.get("score")
        score = (
            float(score)
            if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
            else None
        )
        if provenance not in best or stamp >= best[provenance][1]:
            best[provenance] = (label, stamp, score)
    for provenance in ("human", "llm"):
        if provenance in best:
            label, _, score = best[provenance]
            return label, provenance, score
    confidence = example.get("confidence")
    if (
        example.get("router_label") is not None
        and example.get("success") is True
        and confidence is not None
        and confidence >= min_trace_confidence
    ):
        return example["router_label"], "router", confidence
    return None, "unlabeled", None


def quarantine_row(item: Any, spec: RoutingModuleSpec, reason: str) -> dict:
    """A quarantine table row for a span (or an example parsed from one) and its reason."""
    span_id = start_time = None
    if isinstance(item, Mapping):
        context = item.get("context")
        span_id = context.get("span_id") if isinstance(context, Mapping) else item.get("span_id")
        start_time = item.get("start_time") if isinstance(item.get("start_time"), str) else None
    return {
        "span_id": str(span_id) if span_id is not None else "",
        "module": spec.name,
        "reason": reason,
        "raw": raw_excerpt(item),
        "start_time": start_time,
    }


def parse_page(page: Sequence[Any], spec: RoutingModuleSpec) -> tuple[list[dict], list[dict]]:
    """Examples for the spans that keep the contract, quarantine rows for the others."""
    examples, quarantined = [], []
    for span in page:
        try:
            examples.append(parse_span(span, spec))
        except Malformed as reason:
            quarantined.append(quarantine_row(span, spec, str(reason)))
    return examples, quarantined


def label_examples(
    examples: Sequence[dict],
    annotations: Mapping[str, Sequence[Mapping[str, Any]]],
    spec: RoutingModuleSpec,
    min_trace_confidence: float,
) -> tuple[list[dict], list[dict]]:
    """Label each example from its annotations (by span id); contradictory ones are quarantined."""
    labeled, quarantined = [], []
    for example in examples:
        try:
            example["label"], example["provenance"], example["label_score"] = choose_label(
                example, annotations.get(example["span_id"], []), spec, min_trace_confidence
            )
        except Malformed as reason:
            quarantined.append(quarantine_row(example, spec, str(reason)))
            continue
        labeled.append(example)
    return labeled, quarantined
