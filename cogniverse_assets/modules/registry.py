"""The one registry of routing modules: every per-module asset, CLI command and test iterates it.

Each module is a DSPy signature with a Literal output (so the local LM's output is
schema-constrained), the corpus/annotation field that holds its label, and how to turn a labeled
row into module inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import dspy

from cogniverse_resources import trace_contract as tc
from cogniverse_assets.modules.signatures import CrossModalSignature, ModalitySignature, RoutingSignature


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

    @property
    def decision_attribute(self) -> str:
        return tc.MODULE_DECISION_ATTRIBUTE[self.name]

    def label_of(self, prediction: dspy.Prediction) -> str:
        return str(getattr(prediction, self.label_field))

    def program(self) -> dspy.Module:
        """The unoptimized module: one ``Predict`` over the signature."""
        return dspy.Predict(self.signature)


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
        ),
        RoutingModuleSpec(
            name="cross_modal",
            signature=CrossModalSignature,
            labels=tc.FUSION_STRATEGIES,
            label_field="fusion_strategy",
            corpus_label_key="fusion_strategy",
            inputs=_query_and_modalities,
            description="query + detected modalities -> whether and how to fuse results",
        ),
        RoutingModuleSpec(
            name="routing",
            signature=RoutingSignature,
            labels=tc.AGENTS,
            label_field="agent",
            corpus_label_key="agent",
            inputs=_query_and_entities,
            description="query + entities -> the agent that handles it",
        ),
    )
}
assert tuple(ROUTING_MODULES) == tc.MODULE_NAMES


def get_module(name: str) -> RoutingModuleSpec:
    try:
        return ROUTING_MODULES[name]
    except KeyError:
        raise ValueError(f"unknown routing module {name!r}; expected one of {', '.join(ROUTING_MODULES)}") from None
