"""The routers' span contract: the pipeline's only input, defined once.

See docs/trace-contract.md for the prose version. Routers (and ``cogniverse traffic``) emit one
``cogniverse.routing`` span per routing decision into the tenant's Phoenix project; people or an
LLM judge attach a ``routing_feedback`` annotation whose label is the correct answer.
"""

from __future__ import annotations

import os
import re
from typing import Final

from cogniverse_resources.tenant import validate_tenant_id

SPAN_NAME: Final = "cogniverse.routing"
REQUEST_SPAN_NAME: Final = "cogniverse.request"
FEEDBACK_ANNOTATION: Final = "routing_feedback"
ANNOTATOR_KINDS: Final = ("HUMAN", "LLM")

DEFAULT_PROJECT_PREFIX: Final = "cogniverse-"

# Span attributes
QUERY: Final = "routing.query"
MODULE: Final = "routing.module"
MODALITY: Final = "routing.modality"
CHOSEN_AGENT: Final = "routing.chosen_agent"
FUSION_STRATEGY: Final = "routing.fusion_strategy"
NEEDS_FUSION: Final = "routing.needs_fusion"
DETECTED_MODALITIES: Final = "routing.detected_modalities"
ENTITIES: Final = "routing.entities"
CONFIDENCE: Final = "routing.confidence"
PATH: Final = "routing.path"  # "fast" (distilled classifier) or "lm" (the DSPy module)
ROUTING_PATHS: Final = ("fast", "lm")
PROCESSING_TIME_MS: Final = "routing.processing_time"
MODULE_VERSION: Final = "routing.module_version"
# On the LM path: the fingerprint of what decided the answer besides the inputs (the LM, its adapter
# and prompt layout, the program's state). The evaluation takes a span's answer as that program's
# own answer only under the same key (cogniverse_assets/answer_memory.py).
PROGRAM_KEY: Final = "routing.program_key"
PROGRAM_KEY_CHARS: Final = 64  # a sha256 hex digest
PROGRAM_KEY_PATTERN: Final = re.compile(f"[0-9a-f]{{{PROGRAM_KEY_CHARS}}}")
TENANT_ID: Final = "tenant.id"
AGENT_SUCCESS: Final = "agent.success"
AGENT_RESULT_COUNT: Final = "agent.result_count"
USER_SATISFACTION: Final = "user.satisfaction"

# Canonical label sets
MODALITIES: Final = ("video", "image", "audio", "document", "text")
AGENTS: Final = (
    "video_search_agent",
    "image_search_agent",
    "audio_analysis_agent",
    "document_agent",
    "text_search_agent",
    "summarizer_agent",
    "detailed_report_agent",
)
FUSION_STRATEGIES: Final = ("none", "rrf", "weighted", "maxsim")

# Which attribute carries each module's decision, and the labels it may take.
MODULE_DECISION_ATTRIBUTE: Final = {
    "modality": MODALITY,
    "cross_modal": FUSION_STRATEGY,
    "routing": CHOSEN_AGENT,
}
MODULE_LABELS: Final = {
    "modality": MODALITIES,
    "cross_modal": FUSION_STRATEGIES,
    "routing": AGENTS,
}
MODULE_NAMES: Final = tuple(MODULE_DECISION_ATTRIBUTE)

MAX_QUERY_CHARS: Final = 2000
SATISFACTION_RANGE: Final = (1, 5)


def project_prefix() -> str:
    return os.environ.get("PHOENIX_PROJECT_PREFIX", DEFAULT_PROJECT_PREFIX)


def project_name(tenant_id: str, prefix: str | None = None) -> str:
    """Phoenix project holding ``tenant_id``'s routing spans (``cogniverse-<tenant>``)."""
    return f"{project_prefix() if prefix is None else prefix}{validate_tenant_id(tenant_id)}"
