"""``calibrated``: the unoptimized module with its label prior corrected by a per-label bias.

A 0.5B model leans towards some labels whatever the query (routing: video_search_agent and
detailed_report_agent over image_search_agent and summarizer_agent; modality: video and text over
audio). Compiling scores the module's own prompt on at most ``FIT_EXAMPLES`` gold-labeled training
examples (one forward pass each, ``LocalLabelScorer``) and fits one number per label: the shift of
the label log-probabilities that maximizes the gold labels' likelihood. Serving passes the shift
as ``logit_bias`` on the labels' first tokens, so the schema-constrained answer is the argmax of
the shifted scores at no extra cost per call. Measured in docs/benchmarks.md ("Label scores with a
per-label bias").

Where the registry says so (``calibration_adds_classifier``: routing), the tenant's label classifier
(``label_classifier.py``, trained on the same gold labels) votes too: the served shift is
``bias + weight * log p_classifier(label | query)``, with bias and weight fitted together on the
same examples, using the classifier's out-of-fold probabilities for them so the weight reflects
how it does on queries it has not seen. Below the classifier's data floor the bias is served alone
and the parameters say why.

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
from cogniverse_assets.modules.label_classifier import LabelClassifier, out_of_fold_probabilities, untrainable_reason
from cogniverse_assets.modules.text_features import feature_text
from cogniverse_resources.label_scorer import LocalLabelScorer, log_normalized

if TYPE_CHECKING:  # the registry loads these programs, so it cannot be imported here at run time
    from cogniverse_assets.modules.registry import RoutingModuleSpec

FIT_EXAMPLES = 50
MIN_FIT_EXAMPLES = 10
FIT_STEPS = 2000
# Keeps log p finite where the classifier gives a label no chance.
PROBABILITY_FLOOR = 1e-9


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


def fit_bias_and_weight(
    scores: np.ndarray, classifier_log_probabilities: np.ndarray, labels: list[str], label_order: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    """Per-label shift b and classifier weight w >= 0 maximizing the mean log-likelihood of
    softmax(scores + b + w * classifier_log_probabilities) at the gold labels; b centred on zero.
    Still concave (the logits are linear in b and w), so projected gradient ascent finds the maximum."""
    target = np.array([[label == gold for label in label_order] for gold in labels], dtype=float)
    bias, weight = np.zeros(len(label_order)), 0.0
    for _ in range(FIT_STEPS):
        residual = target - np.exp(log_normalized(scores + bias + weight * classifier_log_probabilities))
        bias += 0.5 * residual.mean(axis=0)
        weight = max(0.0, weight + 0.2 * float((residual * classifier_log_probabilities).sum(axis=1).mean()))
    return bias - bias.mean(), weight


def log_votes(probabilities: np.ndarray, classes: list[str], label_order: tuple[str, ...]) -> np.ndarray:
    """Classifier probabilities (columns in ``classes`` order) as log-probabilities in ``label_order``."""
    columns = [classes.index(label) for label in label_order]
    return np.log(probabilities[:, columns] + PROBABILITY_FLOOR)


def classifier_log_probabilities(
    classifier: LabelClassifier, inputs_list: list[Mapping[str, object]], label_order: tuple[str, ...]
) -> np.ndarray:
    probabilities = classifier.probabilities([feature_text(inputs) for inputs in inputs_list])
    return log_votes(probabilities, classifier.classes, label_order)


class CalibratedLabels(dspy.Module):
    """One ``Predict`` over the signature, called with a per-label ``logit_bias``."""

    def __init__(
        self,
        spec: RoutingModuleSpec,
        bias: Mapping[str, float],
        label_tokens: Mapping[str, int],
        model: str,
        classifier: LabelClassifier | None = None,
        classifier_weight: float = 0.0,
    ):
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
        if classifier is not None and set(classifier.classes) != set(spec.labels):
            raise ValueError(f"{spec.name}: the classifier knows {classifier.classes}, the module {list(spec.labels)}")
        self.classifier = classifier
        self.classifier_weight = float(classifier_weight) if classifier is not None else 0.0

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
        fit_frame = stratified_pick(gold, FIT_EXAMPLES, seed=seed)
        rows = gold_rows(spec, fit_frame)
        tokens = scorer.first_tokens(spec.labels)
        prefix = answer_prefix(spec)
        scores = np.array(
            [scorer.scores(adapter.format(spec.signature, [], row["inputs"]), prefix, tokens) for row in rows]
        )
        labels = [row["label"] for row in rows]
        classifier, weight, vote = None, 0.0, np.zeros_like(scores)
        classifier_note = "not used for this module"
        if spec.calibration_adds_classifier:
            classifier, vote, classifier_note = classifier_and_fit_votes(spec, gold, fit_frame.index, seed)
        if classifier is None:
            bias = fit_bias(scores, labels, spec.labels)
        else:
            bias, weight = fit_bias_and_weight(scores, vote, labels, spec.labels)
        program = cls(spec, dict(zip(spec.labels, bias)), dict(zip(spec.labels, tokens)), model, classifier, weight)
        gold_index = [spec.labels.index(label) for label in labels]
        fitted = float(np.mean(scores.argmax(axis=1) == gold_index))
        shifted = float(np.mean((scores + bias + weight * vote).argmax(axis=1) == gold_index))
        parameters = {
            "fitted_on": len(rows),
            "fit_accuracy_before": round(fitted, 4),
            "fit_accuracy_after": round(shifted, 4),
            "bias": {label: round(float(value), 4) for label, value in zip(spec.labels, bias)},
            "classifier_weight": round(weight, 4),
            "classifier": classifier_note,
        }
        return program, parameters

    def shift(self, inputs: Mapping[str, object]) -> np.ndarray:
        """The per-label shift this query's answer gets, in ``spec.labels`` order."""
        bias = np.array([self.bias[label] for label in self.spec.labels])
        if self.classifier is None:
            return bias
        vote = classifier_log_probabilities(self.classifier, [inputs], self.spec.labels)[0]
        return bias + self.classifier_weight * vote

    def logit_bias(self, inputs: Mapping[str, object]) -> dict[str, float]:
        shift = self.shift(inputs)
        return {str(self.label_tokens[label]): round(float(value), 4) for label, value in zip(self.spec.labels, shift)}

    def forward(self, **inputs):
        lm = dspy.settings.lm
        if lm is not None and getattr(lm, "model", self.model) != self.model:
            raise ValueError(
                f"{self.spec.name} was calibrated for {self.model}; its label token ids mean nothing to {lm.model}"
            )
        return self.predict(**inputs, config={"logit_bias": self.logit_bias(inputs)})

    def dump_state(self, json_mode: bool = True) -> dict:
        state = super().dump_state(json_mode=json_mode)
        state["calibration"] = {
            "bias": self.bias,
            "label_tokens": self.label_tokens,
            "model": self.model,
            "classifier": self.classifier.to_state() if self.classifier is not None else None,
            "classifier_weight": self.classifier_weight,
        }
        return state

    @classmethod
    def from_state(cls, spec: RoutingModuleSpec, state: Mapping) -> "CalibratedLabels":
        calibration = state["calibration"]
        stored_classifier = calibration.get("classifier")  # absent in versions stored before it voted
        program = cls(
            spec,
            calibration["bias"],
            calibration["label_tokens"],
            str(calibration["model"]),
            LabelClassifier.from_state(stored_classifier) if stored_classifier else None,
            float(calibration.get("classifier_weight") or 0.0),
        )
        program.predict.load_state(state["predict"])
        return program


def classifier_and_fit_votes(
    spec: RoutingModuleSpec, gold: pd.DataFrame, fit_index: pd.Index, seed: int
) -> tuple[LabelClassifier | None, np.ndarray, str]:
    """The classifier trained on every gold row, and its out-of-fold log-probabilities for the fit
    rows (what it says of queries it was not trained on); (None, zeros, why) below its data floor."""
    rows = gold_rows(spec, gold)
    labels = [row["label"] for row in rows]
    missing = sorted(set(spec.labels) - set(labels))
    reason = untrainable_reason(labels) or (f"no examples of {', '.join(missing)}" if missing else None)
    if reason:
        return None, np.zeros((len(fit_index), len(spec.labels))), f"off: {reason}"
    texts = [feature_text(row["inputs"]) for row in rows]
    probabilities, classes = out_of_fold_probabilities(texts, labels, seed=seed)
    votes = log_votes(probabilities[gold.index.get_indexer(fit_index)], classes, spec.labels)
    return LabelClassifier.fit(texts, labels), votes, f"on: trained on {len(rows)} gold examples"
