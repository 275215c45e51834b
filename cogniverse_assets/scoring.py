"""Scoring a routing module on labeled examples, and the promotion decision.

The promotion rule: the candidate's accuracy must beat the deployed module's by at least
``min_gain`` on the same validation split; when the split has at least ``MIN_N_FOR_INTERVAL``
examples the lower bound of a paired bootstrap 90 % interval of the difference must also be
above zero; and no class may lose more than ``max_class_recall_drop`` recall.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import dspy
import numpy as np

from cogniverse_assets.answer_memory import AnswerMemory
from cogniverse_assets.fast_path import MAX_CASCADE_LOSS, FastPath, cascade_answers
from cogniverse_assets.modules.calibrated import CalibratedLabels
from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_assets.optimizers import LMUsage
from cogniverse_resources.tenant import DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP, DEFAULT_PROMOTION_MIN_GAIN

MIN_N_FOR_INTERVAL = 30
BOOTSTRAP_SAMPLES = 2000
INTERVAL = 0.90
DEFAULT_MIN_GAIN = DEFAULT_PROMOTION_MIN_GAIN
DEFAULT_MAX_CLASS_RECALL_DROP = DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP


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
    latencies_ms: list[float] = field(default_factory=list)
    # Which path answered each example: "fast" (the distilled classifier) or "lm".
    paths: list[str] = field(default_factory=list)

    @property
    def fast_path_share(self) -> float:
        return self.paths.count("fast") / len(self.paths) if self.paths else 0.0

    def summary(self) -> dict:
        data = asdict(self)
        for bulky in ("correct", "predictions", "latencies_ms", "paths"):
            data.pop(bulky)
        return {
            **data,
            "fast_path_share": round(self.fast_path_share, 4),
            **latency_figures(self.latencies_ms, self.paths),
        }


def latency_figures(latencies_ms: list[float], paths: list[str]) -> dict[str, float | None]:
    """p50/p95 latency in ms, overall (``latency_ms_p50``) and per path (``fast_latency_ms_p50``, ...);
    None where a path answered nothing."""
    figures: dict[str, float | None] = {}
    for name in ("all", "fast", "lm"):
        values = [ms for ms, path in zip(latencies_ms, paths) if name == "all" or path == name]
        prefix = "" if name == "all" else f"{name}_"
        for q in (50, 95):
            figures[f"{prefix}latency_ms_p{q}"] = round(float(np.percentile(values, q)), 3) if values else None
    return figures


def score_examples(
    spec: RoutingModuleSpec,
    gold: list[str],
    predicted: list[str],
    latencies_ms: list[float],
    lm_calls: int,
    paths: list[str] | None = None,
) -> Scores:
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
        per_class[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
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
        latencies_ms=list(latencies_ms),
        paths=list(paths) if paths is not None else ["lm"] * len(correct),
    )


@dataclass
class ProgramAnswers:
    """A program's label for each input, how long each took, and the LM calls they cost."""

    labels: list[str]
    latencies_ms: list[float]
    lm_calls: int


def answer_inputs(
    spec: RoutingModuleSpec,
    program: dspy.Module,
    inputs: Iterable[dict],
    lm: dspy.LM,
    adapter: dspy.Adapter,
    memory: AnswerMemory | None = None,
) -> ProgramAnswers:
    """The program's answer to each input; with ``memory``, a remembered answer instead of an LM call
    where there is one, and every new answer remembered. LM calls count the server's calls and the
    passes of a module that answers in process (``calibrated_state``)."""
    usage = LMUsage([lm])
    labels, latencies = [], []
    in_process = 0
    with dspy.context(lm=lm, adapter=adapter):
        for row in inputs:
            remembered = memory.recall(row) if memory is not None else None
            if remembered is not None:
                labels.append(remembered.label)
                latencies.append(remembered.latency_ms)
                continue
            started = time.perf_counter()
            prediction = program(**row)
            latencies.append((time.perf_counter() - started) * 1000)
            labels.append(spec.label_of(prediction))
            in_process += CalibratedLabels.own_probability(prediction) is not None
            if memory is not None:
                memory.remember(row, labels[-1], latencies[-1])
    return ProgramAnswers(labels, latencies, usage.figures()["lm_calls"] + in_process)


def score_program(
    spec: RoutingModuleSpec,
    program: dspy.Module,
    examples: list[dspy.Example],
    lm: dspy.LM,
    adapter: dspy.Adapter,
    memory: AnswerMemory | None = None,
) -> Scores:
    """The program scored on ``examples``, answered as ``answer_inputs`` does."""
    answers = answer_inputs(spec, program, [dict(example.inputs()) for example in examples], lm, adapter, memory)
    gold = [str(getattr(example, spec.label_field)) for example in examples]
    return score_examples(spec, gold, answers.labels, answers.latencies_ms, answers.lm_calls)


@dataclass
class CascadeScores:
    """One module on one split: its LM module alone, and as served (fast path in front of it)."""

    lm_only: Scores
    served: Scores
    fast_path_kept: bool
    note: str


def score_cascade(
    spec: RoutingModuleSpec,
    program: dspy.Module,
    fast_path: FastPath | None,
    examples: list[dspy.Example],
    lm: dspy.LM,
    adapter: dspy.Adapter,
    memory: AnswerMemory | None = None,
) -> CascadeScores:
    """The LM module answers every example (so the cascade can be compared with it); the cascade
    takes the fast path's answer where it is confident. A fast path that makes the cascade lose
    more than ``MAX_CASCADE_LOSS`` against its own LM module is not kept: served = LM alone."""
    lm_only = score_program(spec, program, examples, lm, adapter, memory)
    if fast_path is None:
        return CascadeScores(lm_only, lm_only, False, "no fast path")
    inputs = [dict(example.inputs()) for example in examples]
    fast_ms = []
    for row in inputs:
        started = time.perf_counter()
        fast_path.predict(row)
        fast_ms.append((time.perf_counter() - started) * 1000)
    answers, paths = cascade_answers(fast_path, inputs, lm_only.predictions)
    latencies = [fast if path == "fast" else slow for fast, slow, path in zip(fast_ms, lm_only.latencies_ms, paths)]
    gold = [str(getattr(example, spec.label_field)) for example in examples]
    served = score_examples(spec, gold, answers, latencies, paths.count("lm"), paths)
    if served.accuracy < lm_only.accuracy - MAX_CASCADE_LOSS:
        note = (
            f"fast path off: the cascade scored {served.accuracy:.3f} against {lm_only.accuracy:.3f} for the LM "
            f"module alone (more than {MAX_CASCADE_LOSS} lower)"
        )
        return CascadeScores(lm_only, lm_only, False, note)
    note = (
        f"fast path kept: answers {served.fast_path_share:.0%}, cascade {served.accuracy:.3f} vs LM module "
        f"{lm_only.accuracy:.3f}"
    )
    return CascadeScores(lm_only, served, True, note)


@dataclass(frozen=True)
class PairedComparison:
    """Two modules answering the same examples: the accuracy difference, its paired bootstrap
    interval, and McNemar's exact test on the examples where exactly one of them is right."""

    n: int
    gain: float
    low: float
    high: float
    level: float
    wins: int  # candidate right, baseline wrong
    losses: int  # candidate wrong, baseline right
    mcnemar_p: float

    def figures(self) -> dict:
        return {
            "gain": round(self.gain, 4),
            "interval": [round(self.low, 4), round(self.high, 4)],
            "interval_level": self.level,
            "wins": self.wins,
            "losses": self.losses,
            "mcnemar_p": round(self.mcnemar_p, 4),
            "n": self.n,
        }


def paired_comparison(
    candidate: list[bool], baseline: list[bool], level: float = INTERVAL, seed: int = 0
) -> PairedComparison:
    """``level`` interval of accuracy(candidate) − accuracy(baseline), resampling examples in pairs."""
    import numpy as np
    from scipy.stats import binomtest

    if len(candidate) != len(baseline):
        raise ValueError(f"paired comparison needs the same examples: {len(candidate)} != {len(baseline)}")
    n = len(candidate)
    difference = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    wins, losses = int((difference > 0).sum()), int((difference < 0).sum())
    if n == 0:
        return PairedComparison(0, 0.0, 0.0, 0.0, level, 0, 0, 1.0)
    picks = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    means = np.sort(difference[picks].mean(axis=1))
    tail = (1 - level) / 2
    low, high = means[int(tail * BOOTSTRAP_SAMPLES)], means[int((1 - tail) * BOOTSTRAP_SAMPLES) - 1]
    p_value = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return PairedComparison(n, float(difference.mean()), float(low), float(high), level, wins, losses, float(p_value))


def promotion_decision(
    candidate: Scores,
    deployed: Scores,
    min_gain: float = DEFAULT_MIN_GAIN,
    max_class_recall_drop: float = DEFAULT_MAX_CLASS_RECALL_DROP,
    validation_source: str = "real",
) -> tuple[bool, list[str], dict]:
    """(promote?, reasons, figures) for a candidate against the deployed module on the same split.

    ``validation_source`` is the training set's: only a "real" (human/LLM-annotated) split can
    promote; on synthetic (cold start) or unknown validation the figures are reported, never acted on."""
    reasons, figures = [], {}
    gain = candidate.accuracy - deployed.accuracy
    figures["gain"] = round(gain, 4)
    figures["validation_source"] = validation_source
    promote = True
    if candidate.n == 0:
        return False, ["empty validation split: nothing to decide on"], figures
    if validation_source != "real":
        promote = False
        reasons.append(
            f"validation is {validation_source}, not human/LLM-annotated: a candidate graded on it is "
            "never promoted automatically"
        )
    if gain < min_gain:
        promote = False
        reasons.append(f"accuracy gain {gain:+.3f} < required {min_gain:+.3f}")
    else:
        reasons.append(f"accuracy gain {gain:+.3f} >= required {min_gain:+.3f}")
    paired = paired_comparison(candidate.correct, deployed.correct)
    low, high = paired.low, paired.high
    # Always reported (the demo table and the UI show it); it decides only on splits large enough.
    figures["interval"] = [round(low, 4), round(high, 4)]
    figures["mcnemar_p"] = round(paired.mcnemar_p, 4)
    if candidate.n >= MIN_N_FOR_INTERVAL:
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
