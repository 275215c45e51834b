"""The tenant's label classifier: text features into a multinomial logistic regression.

Two users share it: the distilled fast path (``fast_path.py``), which answers alone when it is
confident, and the optimizer ``calibrated`` (``calibrated.py``), which adds its log-probabilities to
the LM's label scores. Fitted on gold labels only; its state is plain JSON (no pickle), so loading
it never executes code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from cogniverse_assets.modules.text_features import ClassifierFeatures

MIN_LABELED = 50
MIN_PER_CLASS = 5
REGULARIZATION_C = 10.0
FOLDS = 5


def untrainable_reason(labels: Sequence[str]) -> str | None:
    """Why a classifier should not be fitted on these gold labels, or None when it may."""
    counts = Counter(labels)
    if len(labels) < MIN_LABELED:
        return f"{len(labels)} gold-labeled training examples < {MIN_LABELED}"
    rare = sorted(label for label, n in counts.items() if n < MIN_PER_CLASS)
    if rare:
        return f"labels with < {MIN_PER_CLASS} examples: {', '.join(rare)}"
    if len(counts) < 2:
        return "a single label"
    return None


def spelled_out(model: LogisticRegression) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A fitted logistic regression's classes, coefficients and intercepts, one row per class even
    when binary (scikit-learn keeps one row then), as C-ordered float arrays like a stored model's."""
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    classes = [str(c) for c in model.classes_]
    return classes, np.ascontiguousarray(coef, dtype=float), np.ascontiguousarray(intercept, dtype=float)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    odds = np.exp(logits - logits.max(axis=1, keepdims=True))
    return odds / odds.sum(axis=1, keepdims=True)


@dataclass
class LabelClassifier:
    """Fitted features and weights; ``probabilities`` gives one row per text over ``classes``."""

    embedder: ClassifierFeatures
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[str]) -> "LabelClassifier":
        embedder = ClassifierFeatures.fit(texts)
        model = LogisticRegression(C=REGULARIZATION_C, max_iter=2000).fit(embedder.transform(texts), list(labels))
        return cls(embedder, *spelled_out(model))

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return softmax_rows(np.asarray(self.embedder.transform(texts) @ self.coef.T) + self.intercept)

    def to_state(self) -> dict:
        return {
            "embedder": self.embedder.to_state(),
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "LabelClassifier":
        coef = np.asarray(state["coef"], dtype=float)
        intercept = np.asarray(state["intercept"], dtype=float)
        classes = [str(label) for label in state["classes"]]
        if coef.ndim != 2 or coef.shape[0] != len(classes) or len(intercept) != len(classes):
            raise ValueError("stored classifier is inconsistent: coefficient rows do not match its classes")
        embedder = ClassifierFeatures.from_state(state["embedder"])
        if coef.shape[1] != embedder.dimension:
            raise ValueError(
                f"stored classifier is inconsistent: {coef.shape[1]} coefficients per class "
                f"for {embedder.dimension} features"
            )
        return cls(embedder, classes, coef, intercept)


def out_of_fold_probabilities(
    texts: Sequence[str], labels: Sequence[str], seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Each text's probabilities from a classifier fitted without it (stratified k-fold), with the
    class order of the columns. Needs at least two examples of every label.

    A routing lane asks twice for the same rows and seed (``calibrated``'s vote, then the fast path's
    threshold); the folds' fits are deterministic, so the last few results are kept in the process."""
    probabilities, classes = _out_of_fold_probabilities(tuple(texts), tuple(labels), seed)
    return probabilities.copy(), list(classes)


@lru_cache(maxsize=4)
def _out_of_fold_probabilities(
    texts: tuple[str, ...], labels: tuple[str, ...], seed: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    def fit_and_predict(fit_index: np.ndarray, held_index: np.ndarray) -> tuple[np.ndarray, list[str]]:
        classifier = LabelClassifier.fit([texts[i] for i in fit_index], [labels[i] for i in fit_index])
        return classifier.probabilities([texts[i] for i in held_index]), classifier.classes

    probabilities, classes = stratified_out_of_fold(labels, seed, fit_and_predict)
    return probabilities, tuple(classes)


def stratified_out_of_fold(
    labels: Sequence[str],
    seed: int,
    fit_and_predict: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, list[str]]],
) -> tuple[np.ndarray, list[str]]:
    """Each row's probabilities from a model fitted without it (stratified k-fold, at most
    ``FOLDS``), columns in sorted label order. ``fit_and_predict(fit_rows, held_rows)`` fits on the
    first rows and gives the held rows' probabilities with its class order."""
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    counts = [int((labels == label).sum()) for label in classes]
    probabilities = np.zeros((len(labels), len(classes)))
    folds = StratifiedKFold(n_splits=min(FOLDS, min(counts)), shuffle=True, random_state=seed)
    for fit_index, held_index in folds.split(np.zeros(len(labels)), labels):
        held, model_classes = fit_and_predict(fit_index, held_index)
        probabilities[held_index] = held[:, [model_classes.index(label) for label in classes]]
    return probabilities, classes
