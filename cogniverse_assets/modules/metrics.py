"""Metrics of the routing modules: exact match, GEPA's feedback metric, and the shaped reward.

Shaped reward (from the design document), normalized to [0, 1]:
task success +10, high satisfaction (>= 4 of 5) +5, low latency (< 100 ms) +2, correct label +3,
failure −5. The raw score spans [−5, 20]; ``(raw + 5) / 25`` maps it to [0, 1]. It grades spans
(outcomes), weights GEPA's score, and prioritizes experience replay.
"""

from __future__ import annotations

from typing import Any

import dspy

from cogniverse_assets.modules.registry import RoutingModuleSpec

SUCCESS_REWARD = 10.0
SATISFACTION_REWARD = 5.0
LATENCY_REWARD = 2.0
CORRECT_LABEL_REWARD = 3.0
FAILURE_PENALTY = -5.0
HIGH_SATISFACTION = 4
LOW_LATENCY_MS = 100.0
_RAW_MIN = FAILURE_PENALTY
_RAW_MAX = SUCCESS_REWARD + SATISFACTION_REWARD + LATENCY_REWARD + CORRECT_LABEL_REWARD


def shaped_reward(
    success: bool | None,
    correct: bool,
    satisfaction: float | None = None,
    latency_ms: float | None = None,
) -> float:
    """The design's shaped reward for one routed request, in [0, 1]."""
    raw = 0.0
    if success is True:
        raw += SUCCESS_REWARD
    elif success is False:
        raw += FAILURE_PENALTY
    if satisfaction is not None and satisfaction >= HIGH_SATISFACTION:
        raw += SATISFACTION_REWARD
    if latency_ms is not None and latency_ms < LOW_LATENCY_MS:
        raw += LATENCY_REWARD
    if correct:
        raw += CORRECT_LABEL_REWARD
    return (raw - _RAW_MIN) / (_RAW_MAX - _RAW_MIN)


def exact_match(spec: RoutingModuleSpec):
    """``metric(gold, pred, trace=None) -> bool`` for DSPy optimizers and evaluation."""

    def metric(gold: dspy.Example, pred: dspy.Prediction, trace: Any = None) -> bool:
        return str(getattr(pred, spec.label_field, "")) == str(getattr(gold, spec.label_field))

    metric.__name__ = f"{spec.name}_exact_match"
    return metric


def feedback_metric(spec: RoutingModuleSpec):
    """GEPA's metric: score plus a short text saying what was wrong.

    The score is 1/0 exact match; the feedback names the expected label and what it means, so the
    reflection LM can rewrite the instruction toward the confusion it sees.
    """

    def metric(
        gold: dspy.Example,
        pred: dspy.Prediction,
        trace: Any = None,
        pred_name: str | None = None,
        pred_trace: Any = None,
    ) -> dspy.Prediction:
        expected = str(getattr(gold, spec.label_field))
        got = str(getattr(pred, spec.label_field, ""))
        if got == expected:
            return dspy.Prediction(score=1.0, feedback=f"Correct: '{expected}'.")
        return dspy.Prediction(
            score=0.0,
            feedback=f"Wrong: answered '{got}' but the correct {spec.label_field} is '{expected}' "
            f"({spec.label_meanings.get(expected, '')}).",
        )

    metric.__name__ = f"{spec.name}_feedback"
    return metric
