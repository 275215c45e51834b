"""A linear probe on the local LM's hidden state: standardized state into a logistic regression.

``calibrated_state`` (``calibrated.py``) adds its log-probabilities to the LM's label scores. The
state is the model's last layer at the position where the schema-constrained answer names its
label (``LocalLabelScorer.scores_and_state``); on routing it told the agents apart better than the
bag-of-words classifier (docs/benchmarks.md, "The LM's own hidden state as a vote beside the bias").
Its regularization is chosen among ``REGULARIZATION_CHOICES`` by out-of-fold accuracy on the rows it
is trained on. Fitted on gold labels only; its state is plain JSON (no pickle), so loading it never
executes code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from cogniverse_assets.modules.label_classifier import softmax_rows, spelled_out, stratified_out_of_fold

REGULARIZATION_CHOICES = (0.01, 0.1, 1.0)


@dataclass
class StateProbe:
    """Standardization and weights; ``probabilities`` gives one row per state over ``classes``."""

    mean: np.ndarray
    scale: np.ndarray
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    regularization: float

    @classmethod
    def fit(cls, states: np.ndarray, labels: Sequence[str], regularization: float) -> "StateProbe":
        states = np.asarray(states, dtype=float)
        mean = states.mean(axis=0)
        scale = states.std(axis=0)
        scale[scale == 0] = 1.0  # a constant component carries nothing; keep it finite
        model = LogisticRegression(C=regularization, max_iter=5000).fit((states - mean) / scale, list(labels))
        classes, coef, intercept = spelled_out(model)
        return cls(mean, scale, classes, coef, intercept, regularization)

    def standardized(self, states: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(np.asarray(states, dtype=float)) - self.mean) / self.scale

    def probabilities(self, states: np.ndarray) -> np.ndarray:
        return softmax_rows(self.standardized(states) @ self.coef.T + self.intercept)

    def to_state(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "regularization": self.regularization,
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "StateProbe":
        mean, scale = np.asarray(state["mean"], dtype=float), np.asarray(state["scale"], dtype=float)
        coef, intercept = np.asarray(state["coef"], dtype=float), np.asarray(state["intercept"], dtype=float)
        classes = [str(label) for label in state["classes"]]
        if coef.ndim != 2 or coef.shape[0] != len(classes) or len(intercept) != len(classes):
            raise ValueError("stored state probe is inconsistent: coefficient rows do not match its classes")
        if not (coef.shape[1] == len(mean) == len(scale)) or not np.all(scale > 0):
            raise ValueError(
                f"stored state probe is inconsistent: {coef.shape[1]} coefficients per class, "
                f"{len(mean)} means and {len(scale)} scales (all must match, scales > 0)"
            )
        return cls(mean, scale, classes, coef, intercept, float(state["regularization"]))


def out_of_fold_probabilities(
    states: np.ndarray, labels: Sequence[str], regularization: float, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Each row's probabilities from a probe fitted without it (stratified k-fold), with the class
    order of the columns. Needs at least two examples of every label."""

    def fit_and_predict(fit_index: np.ndarray, held_index: np.ndarray) -> tuple[np.ndarray, list[str]]:
        probe = StateProbe.fit(states[fit_index], [labels[i] for i in fit_index], regularization)
        return probe.probabilities(states[held_index]), probe.classes

    return stratified_out_of_fold(labels, seed, fit_and_predict)


def fit_with_chosen_regularization(
    states: np.ndarray, labels: Sequence[str], seed: int = 0
) -> tuple[StateProbe, np.ndarray, list[str], dict[float, float]]:
    """The probe on every row, with the regularization whose out-of-fold accuracy on these rows is
    best (the smaller on a tie), its out-of-fold probabilities, their class order, and the accuracy
    of each choice."""
    states, gold = np.asarray(states, dtype=float), np.asarray(labels)
    runs = {c: out_of_fold_probabilities(states, labels, c, seed) for c in REGULARIZATION_CHOICES}
    accuracy = {
        c: float(np.mean(np.asarray(classes)[probabilities.argmax(axis=1)] == gold))
        for c, (probabilities, classes) in runs.items()
    }
    chosen = max(REGULARIZATION_CHOICES, key=lambda c: (accuracy[c], -c))
    probabilities, classes = runs[chosen]
    return StateProbe.fit(states, labels, chosen), probabilities, classes, accuracy
