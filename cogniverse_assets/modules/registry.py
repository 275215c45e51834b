"""The one registry of routing modules: every per-module asset, CLI command and test iterates it.

Each module is a DSPy signature with a Literal output (so the local LM's output is
schema-constrained), the corpus/annotation field that holds its label, and how to turn a labeled
row into module inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import dspy

from cogniverse_assets.modules.signatures import CrossModalSignature, ModalitySignature, RoutingSignature
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.lm import PromptLayout


@dataclass(frozen=True)
class RoutingModuleSpec:
    name: str
    signature: type[dspy.Signature]
    labels: tuple[str, ...]
    # Name of the signature's output field that carries the label.
    label_field: str
    # Key of the demo corpus column that holds this module's gold label.
    corpus_label_key: str
    # Builds the signature's input fields from a corpus/trace row.
    inputs: Callable[[Mapping[str, object]], dict[str, object]]
    description: str
    # What each label means, in words a query writer (human or LM) can act on.
    label_meanings: Mapping[str, str]
    # Content modalities a synthetic query for a label should be grounded in (empty: any one).
    content_modalities: Mapping[str, tuple[str, ...]]
    # Output fields other than the label that follow from it (a complete demo needs them).
    derived_outputs: Callable[[str], dict[str, object]] = lambda label: {}
    # Whether the optimizer ``calibrated`` adds the label classifier's vote to the LM's label scores.
    # Decided per module by a rule written before measuring (docs/benchmarks.md "The classifier's
    # vote in `calibrated`"): routing gains over the bias alone; modality loses on two of three seeds
    # and on the external holdout.
    calibration_adds_classifier: bool = False
    # Whether the optimizer ``calibrated_state`` may train a probe on the LM's hidden state. Decided
    # per module by a rule written before measuring (docs/benchmarks.md "The LM's own hidden state as
    # a vote beside the bias"): routing gains over today's vote; modality loses on the external
    # holdout on every seed.
    calibration_reads_state: bool = False
    # Where the local adapter puts DSPy's reminder of the output fields (``LlamaCppJSONAdapter``).
    # Decided per module by a rule written before a confirmatory run on queries the choice was not
    # made on (docs/benchmarks.md "Prompt layout"): cross_modal puts it first; modality's calls got
    # too little faster with demos, and routing lost accuracy. Each stored version records the layout
    # it was compiled and gated with, and is served with that one.
    prompt_layout: PromptLayout = "reminder_last"

    @property
    def decision_attribute(self) -> str:
        return tc.MODULE_DECISION_ATTRIBUTE[self.name]

    def label_of(self, prediction: dspy.Prediction) -> str:
        return str(getattr(prediction, self.label_field))

    def outputs_for(self, label: str) -> dict[str, object]:
        """Every output field of the signature for an example whose label is ``label``."""
        return {**self.derived_outputs(label), self.label_field: label}

    def program(self) -> dspy.Module:
        """The unoptimized module: one ``Predict`` over the signature."""
        return dspy.Predict(self.signature)

    def load_program(self, payload: Mapping[str, object]) -> dspy.Module:
        """A stored (JSON) module version back as a program: a ``Predict`` with its demos and
        instructions, a retrieved-demos module when the state carries a demo pool, a calibrated
        one when it carries a label bias."""
        from cogniverse_assets.modules.calibrated import CalibratedLabels
        from cogniverse_assets.modules.demos import RetrievedDemos

        state = payload["state"]
        if "retrieval" in state:
            return RetrievedDemos.from_state(self, state)
        if "calibration" in state:
            return CalibratedLabels.from_state(self, state)
        program = self.program()
        program.load_state(state)
        return program


def _query_only(row: Mapping[str, object]) -> dict[str, object]:
    return {"query": row["query"]}


def _query_and_modalities(row: Mapping[str, object]) -> dict[str, object]:
    return {"query": row["query"], "detected_modalities": list(row.get("detected_modalities") or [])}


def _query_and_entities(row: Mapping[str, object]) -> dict[str, object]:
    return {"query": row["query"], "entities": list(row.get("entities") or [])}


ROUTING_MODULES: dict[str, RoutingModuleSpec] = {
    spec.name: spec
    for spec in (
        RoutingModuleSpec(
            name="modality",
            signature=ModalitySignature,
            labels=tc.MODALITIES,
            label_field="modality",
            corpus_label_key="modality",
            inputs=_query_only,
            description="query -> the content modality to search",
            label_meanings={
                "video": "the user wants video content (clips, recordings, footage, tutorials to watch)",
                "image": "the user wants images (photos, pictures, diagrams, screenshots)",
                "audio": "the user wants audio (podcasts, music, calls, sounds to listen to)",
                "document": "the user wants documents (PDFs, papers, reports, manuals, slides)",
                "text": "the user wants text (articles, posts, definitions, explanations)",
            },
            content_modalities={label: (label,) for label in tc.MODALITIES},
        ),
        RoutingModuleSpec(
            name="cross_modal",
            signature=CrossModalSignature,
            labels=tc.FUSION_STRATEGIES,
            label_field="fusion_strategy",
            corpus_label_key="fusion_strategy",
            inputs=_query_and_modalities,
            description="query + detected modalities -> whether and how to fuse results",
            label_meanings={
                "none": "one kind of content is enough; no results from other modalities are needed",
                "rrf": "broad recall across several kinds of content with no preference among them",
                "weighted": "one kind of content is primary and another one supports it",
                "maxsim": "match one specific detail or moment across two kinds of content",
            },
            content_modalities={
                "none": (),
                "rrf": ("video", "text"),
                "weighted": ("document", "video"),
                "maxsim": ("image", "video"),
            },
            derived_outputs=lambda label: {"needs_fusion": label != "none"},
            prompt_layout="reminder_first",
        ),
        RoutingModuleSpec(
            name="routing",
            signature=RoutingSignature,
            labels=tc.AGENTS,
            label_field="agent",
            corpus_label_key="agent",
            inputs=_query_and_entities,
            description="query + entities -> the agent that handles it",
            label_meanings={
                "video_search_agent": "find videos",
                "image_search_agent": "find images",
                "audio_analysis_agent": "find or analyse audio",
                "document_agent": "find or read documents",
                "text_search_agent": "find text such as articles or definitions",
                "summarizer_agent": "summarize something (a recap, key points, tl;dr)",
                "detailed_report_agent": "produce an in-depth analysis, report or comparison",
            },
            content_modalities={
                "video_search_agent": ("video",),
                "image_search_agent": ("image",),
                "audio_analysis_agent": ("audio",),
                "document_agent": ("document",),
                "text_search_agent": ("text",),
                "summarizer_agent": (),
                "detailed_report_agent": (),
            },
            calibration_adds_classifier=True,
            calibration_reads_state=True,
        ),
    )
}
assert tuple(ROUTING_MODULES) == tc.MODULE_NAMES
assert all(
    set(spec.label_meanings) == set(spec.labels) == set(spec.content_modalities) for spec in ROUTING_MODULES.values()
)


def get_module(name: str) -> RoutingModuleSpec:
    try:
        return ROUTING_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown routing module {name!r}; expected one of {', '.join(ROUTING_MODULES)}") from None
