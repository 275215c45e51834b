"""Scoring a routing module on labeled examples, and the promotion decision.

The promotion rule: the candidate's accuracy must beat the deployed module's by at least
``min_gain`` on the same validation split; when the split has at least ``MIN_N_FOR_INTERVAL``
examples the lower bound of a paired bootstrap 90 % interval of the difference must also be
above zero; and no class may lose more than ``max_class_recall_drop`` recall.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import dspy

from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.optimizers import LMUsage

MIN_N_FOR_INTERVAL = 30
BOOTSTRAP_SAMPLES = 2000
INTERVAL = 0.90
DEFAULT_MIN_GAIN = 0.01
DEFAULT_MAX_CLASS_RECALL_DROP = 0.15


@dataclass
class Scores:
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    confusion: dict[str, dict[str, int]]
    mean_latency_ms: float
    lm_calls: int
    n: int
    correct: list[bool]
    predictions: list[str]

    def summary(self) -> dict:
        data = asdict(self)
        data.pop("correct")
        data.pop("predictions")
        return data


def score_examples(spec: RoutingModuleSpec, gold: list[str], predicted: list[str], latencies_ms: list[float], lm_calls: int) -> Scores:
    labels = list(spec.labels)
    confusion = {truth: {guess: 0 for guess in labels} for truth in labels}
    for truth, guess in zip(gold, predicted):
        if truth in confusion and guess in confusion[truth]:
            confusion[truth][guess] += 1
    per_class = {}
    for label in labels:
        tp = confusion[label][label]
        predicted_as = sum(confusion[truth][label] for truth in labels)
        support = sum(confusion[label].values())
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": support}
    present = [label for label in labels if per_class[label]["support"]]
    correct = [truth == guess for truth, guess in zip(gold, predicted)]
    return Scores(
        accuracy=sum(correct) / len(correct) if correct else 0.0,
        macro_f1=sum(per_class[label]["f1"] for label in present) / len(present) if present else 0.0,
        per_class=per_class,
        confusion=confusion,
        mean_latency_ms=sum(latencies_ms) / len(latencies_ms) if latencies_ms else 0.0,
        lm_calls=lm_calls,
        n=len(correct),
        correct=correct,
        predictions=list(predicted),
    )


def score_program(spec: RoutingModuleSpec, program: dspy.Module, examples: list[dspy.Example], lm: dspy.LM, adapter: dspy.Adapter) -> Scores:
    usage = LMUsage([lm])
    predicted, latencies = [], []
    with dspy.context(lm=lm, adapter=adapter):
        for example in examples:
            started = time.perf_counter()
            predicted.append(spec.label_of(program(**example.inputs())))
            latencies.append((time.perf_counter() - started) * 1000)
    gold = [str(getattr(example, spec.label_field)) for example in examples]
    return score_examples(spec, gold, predicted, latencies, usage.figures()["lm_calls"])


def paired_bootstrap_interval(candidate: list[bool], deployed: list[bool], seed: int = 0) -> tuple[float, float]:
    """90 % interval of accuracy(candidate) − accuracy(deployed), resampling examples in pairs."""
    rng = random.Random(seed)
    n = len(candidate)
    differences = []
    for _ in range(BOOTSTRAP_SAMPLES):
        picks = [rng.randrange(n) for _ in range(n)]
        differences.append(sum(candidate[i] - deployed[i] for i in picks) / n)
    differences.sort()
    tail = (1 - INTERVAL) / 2
    return differences[int(tail * BOOTSTRAP_SAMPLES)], differences[int((1 - tail) * BOOTSTRAP_SAMPLES) - 1]


def promotion_decision(
    candidate: Scores,
    deployed: Scores,
    min_gain: float = DEFAULT_MIN_GAIN,
    max_class_recall_drop: float = DEFAULT_MAX_CLASS_RECALL_DROP,
) -> tuple[bool, list[str], dict]:
    """(promote?, reasons, figures) for a candidate against the deployed module on the same split."""
    reasons, figures = [], {}
    gain = candidate.accuracy - deployed.accuracy
    figures["gain"] = round(gain, 4)
    promote = True
    if candidate.n == 0:
        return False, ["empty validation split: nothing to decide on"], figures
    if gain < min_gain:
        promote = False
        reasons.append(f"accuracy gain {gain:+.3f} < required {min_gain:+.3f}")
    else:
        reasons.append(f"accuracy gain {gain:+.3f} >= required {min_gain:+.3f}")
    if candidate.n >= MIN_N_FOR_INTERVAL:
        low, high = paired_bootstrap_interval(candidate.correct, deployed.correct)
        figures["interval"] = [round(low, 4), round(high, 4)]
        if low <= 0:
            promote = False
            reasons.append(f"{INTERVAL:.0%} paired bootstrap interval [{low:+.3f}, {high:+.3f}] includes no gain")
        else:
            reasons.append(f"{INTERVAL:.0%} paired bootstrap interval [{low:+.3f}, {high:+.3f}] excludes zero")
    else:
        reasons.append(f"split of {candidate.n} < {MIN_N_FOR_INTERVAL}: no interval test")
    drops = {
        label: round(deployed.per_class[label]["recall"] - stats["recall"], 4)
        for label, stats in candidate.per_class.items()
        if stats["support"] and deployed.per_class[label]["recall"] - stats["recall"] > max_class_recall_drop
    }
    figures["class_recall_drops"] = drops
    if drops:
        promote = False
        reasons.append(f"recall drops by more than {max_class_recall_drop:.2f} on {', '.join(sorted(drops))}")
    return promote, reasons, figures
