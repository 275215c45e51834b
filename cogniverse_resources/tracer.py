"""Emit conforming ``cogniverse.routing`` spans and ``routing_feedback`` annotations.

Routers use this in production; ``cogniverse traffic`` uses it to simulate them. Spans go through
OpenTelemetry (arize-phoenix-otel) into the tenant's project; annotations through the Phoenix client
once the spans are ingested.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator, Literal, Sequence

from opentelemetry.trace import Status, StatusCode
from phoenix.otel import register

from cogniverse_resources import trace_contract as tc
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.tenant import validate_tenant_id


@dataclass
class RoutingDecision:
    """One router's decision on one query, as the trace contract records it."""

    module: str
    query: str
    label: str
    # None when the router has no real figure for it (an LM answer without a fast path): the
    # attribute is then left out rather than filled with a made-up constant.
    confidence: float | None
    processing_time_ms: float
    module_version: str
    path: str = "lm"
    # The runtime's ``Router.program_key`` on the LM path (None: not recorded).
    program_key: str | None = None
    detected_modalities: Sequence[str] = ()
    entities: Sequence[str] = ()
    success: bool | None = None
    result_count: int | None = None
    satisfaction: int | None = None
    error: str | None = None

    def attributes(self, tenant_id: str) -> dict[str, object]:
        if self.module not in tc.MODULE_DECISION_ATTRIBUTE:
            raise ValueError(f"unknown routing module {self.module!r}; expected one of {tc.MODULE_NAMES}")
        attributes: dict[str, object] = {
            tc.QUERY: self.query,
            tc.MODULE: self.module,
            tc.MODULE_DECISION_ATTRIBUTE[self.module]: self.label,
            tc.PROCESSING_TIME_MS: float(self.processing_time_ms),
            tc.MODULE_VERSION: self.module_version,
            tc.TENANT_ID: tenant_id,
            tc.PATH: self.path,
        }
        if self.confidence is not None:
            attributes[tc.CONFIDENCE] = float(self.confidence)
        if self.program_key is not None and self.path == "lm":
            attributes[tc.PROGRAM_KEY] = self.program_key
        if self.module == "cross_modal":
            attributes[tc.NEEDS_FUSION] = self.label != "none"
        if self.detected_modalities:
            attributes[tc.DETECTED_MODALITIES] = list(self.detected_modalities)
        if self.entities:
            attributes[tc.ENTITIES] = list(self.entities)
        if self.success is not None:
            attributes[tc.AGENT_SUCCESS] = bool(self.success)
        if self.result_count is not None:
            attributes[tc.AGENT_RESULT_COUNT] = int(self.result_count)
        if self.satisfaction is not None:
            attributes[tc.USER_SATISFACTION] = int(self.satisfaction)
        return attributes


@dataclass
class Feedback:
    """A ``routing_feedback`` annotation. Phoenix keeps one annotation per (name, span, identifier),
    so ``identifier`` (default: the annotator kind) lets a human and an LLM judge the same span."""

    span_id: str
    label: str
    annotator_kind: Literal["HUMAN", "LLM"] = "HUMAN"
    score: float = 1.0
    identifier: str | None = None


@dataclass
class RoutingTracer:
    """Tracer bound to one tenant's Phoenix project."""

    phoenix: PhoenixResource
    tenant_id: str
    _provider: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        # Always an explicit authorization header, empty without a key: phoenix.otel otherwise adds the
        # environment's PHOENIX_API_KEY (and PHOENIX_CLIENT_HEADERS), even for a tenant's own Phoenix.
        headers = {"authorization": f"Bearer {self.phoenix.api_key}" if self.phoenix.api_key else ""}
        self._provider = register(
            endpoint=f"{self.phoenix.endpoint.rstrip('/')}/v1/traces",
            project_name=self.phoenix.project_name(self.tenant_id),
            protocol="http/protobuf",
            batch=True,
            set_global_tracer_provider=False,
            headers=headers,
            verbose=False,
        )
        self._tracer = self._provider.get_tracer("cogniverse.router")

    @contextmanager
    def request(self, query: str) -> Iterator[None]:
        """A parent span grouping the three routing decisions made for one user request."""
        with self._tracer.start_as_current_span(
            tc.REQUEST_SPAN_NAME, attributes={tc.QUERY: query, tc.TENANT_ID: self.tenant_id}
        ):
            yield

    def record(self, decision: RoutingDecision, start_time: datetime | None = None) -> str:
        """Emit one ``cogniverse.routing`` span; return its span id (hex) for annotations.

        ``start_time`` (timezone-aware) backdates the span, as a router that exports its spans late
        (a buffered exporter, a batch upload) does; default: now."""
        start_ns = None if start_time is None else int(start_time.timestamp() * 1_000_000_000)
        with self._tracer.start_as_current_span(
            tc.SPAN_NAME, attributes=decision.attributes(self.tenant_id), start_time=start_ns
        ) as span:
            if decision.error:
                span.set_status(Status(StatusCode.ERROR, decision.error))
            else:
                span.set_status(Status(StatusCode.OK))
            return format(span.get_span_context().span_id, "016x")

    def flush(self) -> None:
        self._provider.force_flush()

    def shutdown(self) -> None:
        self._provider.shutdown()

    def annotate(
        self, feedback: Sequence[Feedback], wait_timeout_s: float = 120.0, spans_ingested: bool = False
    ) -> int:
        """Attach ``routing_feedback`` annotations once Phoenix has the spans; return how many.

        Phoenix rejects annotations of spans it has not ingested yet, so unless the caller already
        waited (``spans_ingested``) this flushes and waits first.
        """
        if not feedback:
            return 0
        if not spans_ingested:
            self.flush()
            self.phoenix.wait_for_spans(self.tenant_id, [item.span_id for item in feedback], timeout_s=wait_timeout_s)
        client = self.phoenix.client()
        for start in range(0, len(feedback), 500):
            client.spans.log_span_annotations(
                span_annotations=[
                    {
                        "span_id": item.span_id,
                        "name": tc.FEEDBACK_ANNOTATION,
                        "annotator_kind": item.annotator_kind,
                        "result": {"label": item.label, "score": float(item.score)},
                        "identifier": item.identifier or item.annotator_kind.lower(),
                    }
                    for item in feedback[start : start + 500]
                ],
                sync=True,
            )
        return len(feedback)
