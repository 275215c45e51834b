"""Simulated production traffic: routed requests as spans in a tenant's Phoenix project.

Queries come from the demo corpus's train pool only (the held-out split must never become
training data). Policies:

- ``noisy``: a simulated router that is right with probability ``accuracy`` (fast, for volume).
- ``deployed``: the tenant's router runtime answers each query with the real LM (the closed loop).

A fraction ``feedback_rate`` of the spans gets a ``routing_feedback`` annotation with the true label
(70 % by a human with score 1.0, 30 % by an LLM judge with a lower score).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Literal

from tqdm import tqdm

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import TenantConfigStore
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.tracer import Feedback, RoutingDecision, RoutingTracer

Policy = Literal["noisy", "deployed"]
NOISY_MODULE_VERSION = "noisy-simulator"
HUMAN_SHARE = 0.7
ERROR_RATE = 0.02


@dataclass
class TrafficReport:
    tenant_id: str
    requests: int
    spans: int
    annotated: int
    errors: int
    seconds: float


@dataclass(frozen=True)
class RoutingChoice:
    """A router's answer as the span records it."""

    label: str
    confidence: float | None
    module_version: str
    path: str = "lm"
    program_key: str | None = None


Decide = Callable[[RoutingModuleSpec, dict], RoutingChoice]


def noisy_router(accuracy: float, rng: random.Random) -> Decide:
    """A router that is right with probability ``accuracy``; wrong answers are less confident."""

    def decide(spec: RoutingModuleSpec, row: dict) -> RoutingChoice:
        truth = row[spec.corpus_label_key]
        if rng.random() < accuracy:
            return RoutingChoice(truth, rng.uniform(0.6, 0.99), NOISY_MODULE_VERSION)
        wrong = rng.choice([label for label in spec.labels if label != truth])
        return RoutingChoice(wrong, rng.uniform(0.3, 0.85), NOISY_MODULE_VERSION)

    return decide


def deployed_router_decider(
    tenant_id: str,
    lm: LanguageModelResource | None = None,
    store: TenantConfigStore | None = None,
    artifacts: ArtifactStore | None = None,
) -> Decide:
    """A decider that asks the tenant's deployed routers (the fast path, else real LM calls); the LM,
    config store and artifacts default to the environment's, as ``load_router``'s do."""
    from cogniverse_assets.runtime import Router, load_router  # the runtime loads the LM stack: only on demand

    routers: dict[str, Router] = {}

    def decide(spec: RoutingModuleSpec, row: dict) -> RoutingChoice:
        router = routers.get(spec.name) or routers.setdefault(
            spec.name, load_router(tenant_id, spec.name, lm, store, artifacts)
        )
        answer = router.answer(row)
        return RoutingChoice(answer.label, answer.confidence, router.version, answer.path, answer.program_key)

    return decide


def emit_traffic(
    phoenix: PhoenixResource,
    tenant_id: str,
    n: int,
    feedback_rate: float,
    policy: Policy = "noisy",
    accuracy: float = 0.75,
    seed: int | None = None,
    modules: list[str] | None = None,
    progress: bool = True,
    decide: Decide | None = None,
) -> TrafficReport:
    """Emit ``n`` requests (one span per routing module each) and their feedback annotations."""
    if n < 0:
        raise ValueError("--n must be >= 0")
    if not 0.0 <= feedback_rate <= 1.0:
        raise ValueError("--feedback-rate must be between 0 and 1")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError("--accuracy must be between 0 and 1")
    rng = random.Random(seed)
    specs = [ROUTING_MODULES[name] for name in (modules or list(ROUTING_MODULES))]
    if decide is None:
        if policy == "noisy":
            decide = noisy_router(accuracy, rng)
        elif policy == "deployed":
            decide = deployed_router_decider(tenant_id)
        else:
            raise ValueError(f"unknown policy {policy!r}; expected noisy or deployed")

    pool = load_queries("train")
    tracer = RoutingTracer(phoenix, tenant_id)
    phoenix.ensure_project(tenant_id)
    feedback: list[Feedback] = []
    span_ids: list[str] = []
    errors = 0
    started = time.monotonic()
    for _ in tqdm(range(n), desc=f"traffic {tenant_id}", unit="req", disable=not progress):
        row = rng.choice(pool)
        with tracer.request(row["query"]):
            for spec in specs:
                t0 = time.perf_counter()
                choice = decide(spec, row)
                label = choice.label
                # The simulator answers instantly; give it a plausible router latency instead.
                elapsed_ms = rng.lognormvariate(3.0, 0.5) if policy == "noisy" else (time.perf_counter() - t0) * 1000
                correct = label == row[spec.corpus_label_key]
                failed = rng.random() < ERROR_RATE
                success = (not failed) and rng.random() < (0.92 if correct else 0.35)
                decision = RoutingDecision(
                    module=spec.name,
                    query=row["query"],
                    label=label,
                    confidence=None if choice.confidence is None else round(choice.confidence, 4),
                    path=choice.path,
                    program_key=choice.program_key,
                    processing_time_ms=round(elapsed_ms, 3),
                    module_version=choice.module_version,
                    detected_modalities=row.get("detected_modalities") or (),
                    entities=row.get("entities") or (),
                    success=success,
                    result_count=0 if failed else rng.randint(0 if not success else 1, 25),
                    satisfaction=(rng.randint(4, 5) if success else rng.randint(1, 2)) if rng.random() < 0.5 else None,
                    error="agent call failed" if failed else None,
                )
                span_id = tracer.record(decision)
                span_ids.append(span_id)
                errors += failed
                if rng.random() < feedback_rate:
                    human = rng.random() < HUMAN_SHARE
                    feedback.append(
                        Feedback(
                            span_id=span_id,
                            label=row[spec.corpus_label_key],
                            annotator_kind="HUMAN" if human else "LLM",
                            score=1.0 if human else round(rng.uniform(0.6, 0.95), 3),
                        )
                    )
    # Return only once everything is queryable, so callers (and the sensor) see what was sent.
    tracer.flush()
    phoenix.wait_for_spans(tenant_id, span_ids, timeout_s=120 + len(span_ids) / 50)
    annotated = tracer.annotate(feedback, spans_ingested=True)
    tracer.shutdown()
    return TrafficReport(tenant_id, n, len(span_ids), annotated, errors, time.monotonic() - started)
