"""The distilled fast path: a linear classifier that answers the queries it is confident about, in
milliseconds, and leaves the rest to the LM module (the design's "policy distillation").

Trained per tenant × module on the training split's gold labels only (human and LLM annotations,
synthetic examples with their intended label; never the router's own answers): TF-IDF word and
character n-grams beside static word vectors (``text_features.ClassifierFeatures``) into a
multinomial logistic regression. The static vectors carry what ~130 examples cannot: which words
mean alike (out of fold on 130 corpus examples, 0.50 accuracy against TF-IDF alone's 0.43 over
modality and routing; docs/benchmarks.md "Fast-path features").

The confidence threshold is chosen on out-of-fold predictions (stratified k-fold over the training
split): the lowest threshold — the most queries answered fast — at which the estimated cascade is
at least as accurate as the LM module alone, within ``MAX_CASCADE_LOSS``. For queries the fast path
would answer, the LM module's accuracy is taken from real evidence where it exists (the deployed
router's recorded answers to those very queries) and from the caller's estimate otherwise. The
evaluation then checks the cascade against the LM module on the held-out validation split and
turns the fast path off when it loses there; that check is a gate, not a second tuning.

Below the classifier's data floor (``label_classifier.untrainable_reason``: fewer than 50 gold
examples, or a label with fewer than 5) there is no fast path, and the reason says so. The
fitted state is plain JSON (no pickle): loading it never executes code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cogniverse_assets.modules.demos import gold_frame, gold_rows
from cogniverse_assets.modules.label_classifier import (
    LabelClassifier,
    out_of_fold_probabilities,
    untrainable_reason,
)
from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.modules.text_features import feature_text

MAX_CASCADE_LOSS = 0.01
MIN_FAST_PRECISION = 0.8  # never answer fast below this out-of-fold accuracy, whatever the LM estimate
# Stands in for the LM module's accuracy where nothing better is known; set high on purpose, so an
# unknown LM makes the fast path harder to switch on, not easier.
DEFAULT_LM_ACCURACY = 0.9


def lm_accuracy_estimate(deployed_accuracy: float | None) -> float:
    """The deployed module's measured accuracy when known (never below the default), else the default."""
    if deployed_accuracy is None or deployed_accuracy != deployed_accuracy:  # None or NaN
        return DEFAULT_LM_ACCURACY
    return max(float(deployed_accuracy), DEFAULT_LM_ACCURACY)


@dataclass
class FastPath:
    """The tenant's label classifier plus its threshold; ``answer`` returns (label, probability) or None."""

    classifier: LabelClassifier
    threshold: float
    figures: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    def probabilities(self, inputs_list: Sequence[Mapping[str, object]]) -> np.ndarray:
        return self.classifier.probabilities([feature_text(inputs) for inputs in inputs_list])

    def predict(self, inputs: Mapping[str, object]) -> tuple[str, float]:
        probabilities = self.probabilities([inputs])[0]
        best = int(np.argmax(probabilities))
        return self.classes[best], float(probabilities[best])

    def answer(self, inputs: Mapping[str, object]) -> tuple[str, float] | None:
        label, probability = self.predict(inputs)
        return (label, probability) if probability >= self.threshold else None

    def to_state(self) -> dict:
        return {**self.classifier.to_state(), "threshold": self.threshold, "figures": self.figures}

    @classmethod
    def from_state(cls, state: Mapping) -> "FastPath":
        return cls(LabelClassifier.from_state(state), float(state["threshold"]), dict(state.get("figures") or {}))


@dataclass(frozen=True)
class FastPathResult:
    fast_path: FastPath | None
    reason: str


def choose_threshold(
    confidence: np.ndarray, fast_correct: np.ndarray, lm_correct: np.ndarray
) -> tuple[float | None, dict]:
    """The lowest threshold whose estimated cascade loses at most ``MAX_CASCADE_LOSS`` against the
    LM module alone (``lm_correct``: the LM's per-example correctness or its estimate), with an
    out-of-fold fast-path accuracy of at least ``MIN_FAST_PRECISION`` on what it answers."""
    n = len(confidence)
    best: tuple[float, dict] | None = None
    for threshold in sorted(set(confidence.tolist()), reverse=True):
        covered = confidence >= threshold
        coverage = covered.sum() / n
        fast_accuracy = fast_correct[covered].mean()
        loss = coverage * (lm_correct[covered].mean() - fast_accuracy)
        if loss <= MAX_CASCADE_LOSS and fast_accuracy >= MIN_FAST_PRECISION:
            best = (
                float(threshold),
                {
                    "oof_coverage": round(float(coverage), 4),
                    "oof_fast_accuracy": round(float(fast_accuracy), 4),
                    "oof_estimated_cascade_loss": round(float(loss), 4),
                },
            )
    if best is None:
        return None, {}
    return best


def train_fast_path(
    spec: RoutingModuleSpec, train: pd.DataFrame, lm_accuracy_estimate: float, seed: int = 0
) -> FastPathResult:
    """Fit the classifier on ``train``'s gold rows and choose its threshold out of fold.

    ``lm_accuracy_estimate`` stands for the LM module's accuracy on queries without recorded
    router answers; rows whose ``router_label`` is known use the router's real correctness.
    """
    gold = gold_frame(train)
    rows = gold_rows(spec, gold)
    untrainable = untrainable_reason([row["label"] for row in rows])
    if untrainable:
        return FastPathResult(None, f"fast path off: {untrainable}")
    texts = [feature_text(row["inputs"]) for row in rows]
    labels = np.array([row["label"] for row in rows])
    router = gold["router_label"].tolist() if "router_label" in gold else [None] * len(rows)
    lm_correct = np.array(
        [
            float(answer == label) if isinstance(answer, str) else lm_accuracy_estimate
            for answer, label in zip(router, labels)
        ]
    )

    probabilities, classes = out_of_fold_probabilities(texts, labels, seed=seed)
    confidence = probabilities.max(axis=1)
    fast_correct = np.asarray(classes)[probabilities.argmax(axis=1)] == labels

    threshold, figures = choose_threshold(confidence, fast_correct, lm_correct)
    if threshold is None:
        return FastPathResult(
            None,
            f"fast path off: no threshold keeps the cascade within {MAX_CASCADE_LOSS} of the LM module out of fold",
        )
    figures = {**figures, "trained_on": len(rows), "lm_accuracy_estimate": round(float(lm_accuracy_estimate), 4)}
    reason = (
        f"fast path on: threshold {threshold:.3f} answers {figures['oof_coverage']:.0%} of training queries "
        f"out of fold at {figures['oof_fast_accuracy']:.3f} accuracy"
    )
    return FastPathResult(FastPath(LabelClassifier.fit(texts, labels.tolist()), threshold, figures), reason)


def cascade_answers(
    fast_path: FastPath | None, inputs_list: Sequence[Mapping[str, object]], lm_answers: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(answers, path per query) of the cascade, given the LM module's answers to the same queries."""
    if fast_path is None:
        return list(lm_answers), ["lm"] * len(lm_answers)
    probabilities = fast_path.probabilities(inputs_list) if len(inputs_list) else np.zeros((0, 1))
    answers, paths = [], []
    for row, lm_answer in zip(probabilities, lm_answers):
        best = int(np.argmax(row))
        if row[best] >= fast_path.threshold:
            answers.append(fast_path.classes[best])
            paths.append("fast")
        else:
            answers.append(lm_answer)
            paths.append("lm")
    return answers, paths
