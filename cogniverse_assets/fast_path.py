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

Below ``MIN_LABELED`` gold examples, or with a label under ``MIN_PER_CLASS`` examples, there is no
fast path, and the reason says so. The fitted state is plain JSON (no pickle): loading it never
executes code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from cogniverse_assets.modules.demos import gold_frame, gold_rows
from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.modules.text_features import ClassifierFeatures, feature_text

MIN_LABELED = 50
MIN_PER_CLASS = 5
MAX_CASCADE_LOSS = 0.01
MIN_FAST_PRECISION = 0.8  # never answer fast below this out-of-fold accuracy, whatever the LM estimate
FOLDS = 5
REGULARIZATION_C = 10.0
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
    """A fitted classifier plus its threshold; ``answer`` returns (label, probability) or None."""

    embedder: ClassifierFeatures
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    threshold: float
    figures: dict = field(default_factory=dict)

    def probabilities(self, inputs_list: Sequence[Mapping[str, object]]) -> np.ndarray:
        features = self.embedder.transform([feature_text(inputs) for inputs in inputs_list])
        logits = np.asarray(features @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def predict(self, inputs: Mapping[str, object]) -> tuple[str, float]:
        probabilities = self.probabilities([inputs])[0]
        best = int(np.argmax(probabilities))
        return self.classes[best], float(probabilities[best])

    def answer(self, inputs: Mapping[str, object]) -> tuple[str, float] | None:
        label, probability = self.predict(inputs)
        return (label, probability) if probability >= self.threshold else None

    def to_state(self) -> dict:
        return {
            "embedder": self.embedder.to_state(),
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "threshold": self.threshold,
            "figures": self.figures,
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "FastPath":
        coef = np.asarray(state["coef"], dtype=float)
        intercept = np.asarray(state["intercept"], dtype=float)
        classes = [str(label) for label in state["classes"]]
        if coef.ndim != 2 or coef.shape[0] != len(classes) or len(intercept) != len(classes):
            raise ValueError("stored fast path is inconsistent: coefficient rows do not match its classes")
        embedder = ClassifierFeatures.from_state(state["embedder"])
        if coef.shape[1] != embedder.dimension:
            raise ValueError(
                f"stored fast path is inconsistent: {coef.shape[1]} coefficients per class "
                f"for {embedder.dimension} features"
            )
        return cls(
            embedder,
            classes,
            coef,
            intercept,
            float(state["threshold"]),
            dict(state.get("figures") or {}),
        )


@dataclass(frozen=True)
class FastPathResult:
    fast_path: FastPath | None
    reason: str


def _fit(texts: list[str], labels: list[str]) -> tuple[ClassifierFeatures, LogisticRegression]:
    embedder = ClassifierFeatures.fit(texts)
    model = LogisticRegression(C=REGULARIZATION_C, max_iter=2000)
    model.fit(embedder.transform(texts), labels)
    return embedder, model


def _as_fast_path(embedder: ClassifierFeatures, model: LogisticRegression, threshold: float, figures: dict) -> FastPath:
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # binary LR keeps one row; spell out both classes for the softmax
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return FastPath(
        embedder, [str(c) for c in model.classes_], np.asarray(coef), np.asarray(intercept), threshold, figures
    )


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
    counts = Counter(row["label"] for row in rows)
    if len(rows) < MIN_LABELED:
        return FastPathResult(None, f"fast path off: {len(rows)} gold-labeled training examples < {MIN_LABELED}")
    rare = sorted(label for label, n in counts.items() if n < MIN_PER_CLASS)
    if rare or len(counts) < 2:
        detail = f"labels with < {MIN_PER_CLASS} examples: {', '.join(rare)}" if rare else "a single label"
        return FastPathResult(None, f"fast path off: {detail}")
    texts = [feature_text(row["inputs"]) for row in rows]
    labels = np.array([row["label"] for row in rows])
    router = gold["router_label"].tolist() if "router_label" in gold else [None] * len(rows)
    lm_correct = np.array(
        [
            float(answer == label) if isinstance(answer, str) else lm_accuracy_estimate
            for answer, label in zip(router, labels)
        ]
    )

    confidence = np.zeros(len(rows))
    fast_correct = np.zeros(len(rows), dtype=bool)
    folds = StratifiedKFold(n_splits=min(FOLDS, min(counts.values())), shuffle=True, random_state=seed)
    for fit_index, held_index in folds.split(texts, labels):
        embedder, model = _fit([texts[i] for i in fit_index], labels[fit_index].tolist())
        probabilities = model.predict_proba(embedder.transform([texts[i] for i in held_index]))
        confidence[held_index] = probabilities.max(axis=1)
        fast_correct[held_index] = model.classes_[probabilities.argmax(axis=1)] == labels[held_index]

    threshold, figures = choose_threshold(confidence, fast_correct, lm_correct)
    if threshold is None:
        return FastPathResult(
            None,
            f"fast path off: no threshold keeps the cascade within {MAX_CASCADE_LOSS} of the LM module out of fold",
        )
    figures = {**figures, "trained_on": len(rows), "lm_accuracy_estimate": round(float(lm_accuracy_estimate), 4)}
    embedder, model = _fit(texts, labels.tolist())
    reason = (
        f"fast path on: threshold {threshold:.3f} answers {figures['oof_coverage']:.0%} of training queries "
        f"out of fold at {figures['oof_fast_accuracy']:.3f} accuracy"
    )
    return FastPathResult(_as_fast_path(embedder, model, threshold, figures), reason)


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
