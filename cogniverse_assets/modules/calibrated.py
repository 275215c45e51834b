"""``calibrated``: the unoptimized module with its label prior corrected by a per-label bias.

A 0.5B model leans towards some labels whatever the query (routing: video_search_agent and
detailed_report_agent over image_search_agent and summarizer_agent; modality: video and text over
audio). Compiling scores the module's own prompt on at most ``FIT_EXAMPLES`` gold-labeled training
examples (one forward pass each, ``LocalLabelScorer``) and fits one number per label: the shift of
the label log-probabilities that maximizes the gold labels' likelihood. Serving passes the shift
as ``logit_bias`` on the labels' first tokens, so the schema-constrained answer is the argmax of
the shifted scores at no extra cost per call. Measured in docs/benchmarks.md ("Label scores with a
per-label bias").

Only modules whose one output field is the label can be calibrated this way (modality, routing):
cross_modal writes ``needs_fusion`` before its label. The token ids belong to the local model's
tokenizer; the state records the model, and ``forward`` refuses another one rather than shift
unrelated tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dspy
import numpy as np
import pandas as pd

from cogniverse_assets.blending import stratified_pick
from cogniverse_assets.modules.demos import gold_frame, gold_rows
from cogniverse_resources.label_scorer import LocalLabelScorer, log_normalized

if TYPE_CHECKING:  # the registry loads these programs, so it cannot be imported here at run time
    from cogniverse_assets.modules.registry import RoutingModuleSpec

FIT_EXAMPLES = 50
MIN_FIT_EXAMPLES = 10
FIT_STEPS = 2000


def can_calibrate(spec: RoutingModuleSpec) -> bool:
    return list(spec.signature.output_fields) == [spec.label_field]


def answer_prefix(spec: RoutingModuleSpec) -> str:
    """How the schema-constrained JSON answer begins, up to the label (llama.cpp's grammar output)."""
    return '{ "' + spec.label_field + '": "'


def fit_bias(scores: np.ndarray, labels: list[str], label_order: tuple[str, ...]) -> np.ndarray:
    """Per-label shift b maximizing the mean log-likelihood of softmax(scores + b) at the gold
    labels, centred on zero. The objective is concave in b, so gradient ascent finds its maximum."""
    target = np.array([[label == gold for label in label_order] for gold in labels], dtype=float)
    bias = np.zeros(len(label_order))
    for _ in range(FIT_STEPS):
        bias += 0.5 * (target - np.exp(log_normalized(scores + bias))).mean(axis=0)
    return bias - bias.mean()


class CalibratedLabels(dspy.Module):
    """One ``Predict`` over the signature, called with a per-label ``logit_bias``."""

    def __init__(self, spec: RoutingModuleSpec, bias: Mapping[str, float], label_tokens: Mapping[str, int], model: str):
        super().__init__()
        if not can_calibrate(spec):
            raise ValueError(
                f"{spec.name} writes {list(spec.signature.output_fields)}: only a lone label can be calibrated"
            )
        self.spec = spec
        self.predict = spec.program()
        self.bias = {label: float(bias[label]) for label in spec.labels}
        self.label_tokens = {label: int(label_tokens[label]) for label in spec.labels}
        self.model = model

    @classmethod
    def compile(
        cls,
        spec: RoutingModuleSpec,
        train: pd.DataFrame,
        scorer: LocalLabelScorer,
        adapter: dspy.Adapter,
        model: str,
        seed: int = 0,
    ) -> tuple["CalibratedLabels", dict]:
        gold = gold_frame(train)
        if len(gold) < MIN_FIT_EXAMPLES:
            raise ValueError(
                f"{spec.name}: {len(gold)} gold-labeled training examples < {MIN_FIT_EXAMPLES} to fit a bias on"
            )
        rows = gold_rows(spec, stratified_pick(gold, FIT_EXAMPLES, seed=seed))
        tokens = scorer.first_tokens(spec.labels)
        prefix = answer_prefix(spec)
        scores = np.array(
            [scorer.scores(adapter.format(spec.signature, [], row["inputs"]), prefix, tokens) for row in rows]
        )
        labels = [row["label"] for row in rows]
        bias = fit_bias(scores, labels, spec.labels)
        program = cls(spec, dict(zip(spec.labels, bias)), dict(zip(spec.labels, tokens)), model)
        fitted = float(np.mean(scores.argmax(axis=1) == [spec.labels.index(label) for label in labels]))
        shifted = float(np.mean((scores + bias).argmax(axis=1) == [spec.labels.index(label) for label in labels]))
        parameters = {
            "fitted_on": len(rows),
            "fit_accuracy_before": round(fitted, 4),
            "fit_accuracy_after": round(shifted, 4),
            "bias": {label: round(float(value), 4) for label, value in zip(spec.labels, bias)},
        }
        return program, parameters

    def logit_bias(self) -> dict[str, float]:
        return {str(self.label_tokens[label]): round(self.bias[label], 4) for label in self.spec.labels}

    def forward(self, **inputs):
        lm = dspy.settings.lm
        if lm is not None and getattr(lm, "model", self.model) != self.model:
            raise ValueError(
                f"{self.spec.name} was calibrated for {self.model}; its label token ids mean nothing to {lm.model}"
            )
        return self.predict(**inputs, config={"logit_bias": self.logit_bias()})

    def dump_state(self, json_mode: bool = True) -> dict:
        state = super().dump_state(json_mode=json_mode)
        state["calibration"] = {"bias": self.bias, "label_tokens": self.label_tokens, "model": self.model}
        return state

    @classmethod
    def from_state(cls, spec: RoutingModuleSpec, state: Mapping) -> "CalibratedLabels":
        calibration = state["calibration"]
        program = cls(spec, calibration["bias"], calibration["label_tokens"], str(calibration["model"]))
        program.predict.load_state(state["predict"])
        return program
