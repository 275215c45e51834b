"""Compiling a routing module, with LM call and token accounting.

Three families: demo optimizers that choose labeled demos without LM calls (``knn``: retrieved per
query; ``labeled``: a fixed class-balanced set; see ``modules/demos.py``); ``calibrated``, a
per-label bias fitted on the local model's label scores of at most 50 training examples (one
forward pass each, no search; ``modules/calibrated.py``), and ``calibrated_state``, which also
trains a probe on the local model's hidden state of at most 130 (and answers in process); and
DSPy's optimizers (BootstrapFewShot, MIPROv2, SIMBA, GEPA), which search with the LM and cost LM
calls.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dspy
import pandas as pd
from dspy.utils.callback import BaseCallback

from cogniverse_assets.modules.calibrated import CalibratedLabels, can_calibrate
from cogniverse_assets.modules.demos import DEFAULT_DEMOS_PER_LABEL, DEFAULT_K, RetrievedDemos, class_medoid_demos
from cogniverse_assets.modules.metrics import exact_match, feedback_metric
from cogniverse_assets.modules.registry import RoutingModuleSpec
from cogniverse_resources.tenant import DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP

DEMO_OPTIMIZERS = ("knn", "labeled")
DSPY_OPTIMIZERS = ("bootstrap", "mipro", "simba", "gepa")
CALIBRATED_OPTIMIZERS = ("calibrated", "calibrated_state")
OPTIMIZERS = DEMO_OPTIMIZERS + CALIBRATED_OPTIMIZERS + DSPY_OPTIMIZERS
OPTIMIZER_CLASSES = {
    "knn": "RetrievedDemos",
    "labeled": "class-medoid LabeledFewShot",
    "calibrated": "CalibratedLabels",
    "calibrated_state": "CalibratedLabels with an LM-state probe",
    "bootstrap": "BootstrapFewShot",
    "mipro": "MIPROv2",
    "simba": "SIMBA",
    "gepa": "GEPA",
}
SIMBA_BATCH_SIZE = 32


def to_examples(spec: RoutingModuleSpec, frame: pd.DataFrame) -> list[dspy.Example]:
    """Rows (query, detected_modalities, entities, label) → DSPy examples with the module's inputs."""
    examples = []
    for row in frame.to_dict("records"):
        inputs = spec.inputs({key: _plain(value) for key, value in row.items()})
        example = dspy.Example(**inputs, **spec.outputs_for(row["label"]))
        examples.append(example.with_inputs(*inputs))
    return examples


def _plain(value: Any) -> Any:
    # Parquet round-trips lists as numpy arrays.
    return list(value) if hasattr(value, "tolist") and not isinstance(value, str) else value


@dataclass
class LMUsage:
    """Calls and tokens recorded in the LMs' histories since ``start``."""

    lms: list[dspy.LM]
    _marks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lms = list({id(lm): lm for lm in self.lms}.values())
        self._marks = [len(lm.history) for lm in self.lms]

    def figures(self) -> dict[str, int]:
        calls = tokens = 0
        for lm, mark in zip(self.lms, self._marks):
            for entry in lm.history[mark:]:
                calls += 1
                usage = entry.get("usage") or {}
                tokens += int(usage.get("total_tokens") or 0)
        return {"lm_calls": calls, "lm_tokens": tokens}


class LMCallCounter(BaseCallback):
    """Counts every LM call made while it is installed in ``dspy.context(callbacks=...)``."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def on_lm_start(self, call_id, instance, inputs) -> None:  # noqa: ANN001 - DSPy's callback signature
        with self._lock:
            self.calls += 1


@dataclass
class CompileResult:
    program: dspy.Module
    optimizer: str
    parameters: dict
    seconds: float
    lm_calls: int
    lm_tokens: int


def compile_module(
    spec: RoutingModuleSpec,
    optimizer: str,
    train: pd.DataFrame,
    student_lm: dspy.LM,
    teacher_lm: dspy.LM,
    adapter: dspy.Adapter,
    max_iterations: int = 100,
    selection: pd.DataFrame | None = None,
    seed: int = 0,
    num_threads: int = 1,
    max_class_recall_drop: float = DEFAULT_PROMOTION_MAX_CLASS_RECALL_DROP,
) -> CompileResult:
    """Compile ``spec``'s unoptimized program with ``optimizer`` on the ``train`` rows.

    ``selection`` is only for optimizers that select among candidates (MIPROv2, GEPA) and must be
    carved out of the training data: the held-out validation split never reaches this function.
    ``max_class_recall_drop`` is the tenant's promotion gate's, which ``calibrated`` fits within.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    usage = LMUsage([student_lm, teacher_lm])
    counter = LMCallCounter()
    started = time.monotonic()
    if optimizer in DEMO_OPTIMIZERS:
        program, parameters = _choose_demos(spec, optimizer, train)
    elif optimizer in CALIBRATED_OPTIMIZERS:
        program, parameters, scored = _calibrate(
            spec, optimizer, train, student_lm, adapter, seed, max_class_recall_drop
        )
        counter.calls += scored
    else:
        trainset = to_examples(spec, train)
        valset = to_examples(spec, selection) if selection is not None and len(selection) else None
        with dspy.context(lm=student_lm, adapter=adapter, callbacks=[*dspy.settings.callbacks, counter]):
            program, parameters = _search(
                spec, optimizer, trainset, valset, student_lm, teacher_lm, max_iterations, seed, num_threads
            )
    # Tokens come from the LMs' histories, which miss calls made through copies of an LM; the call
    # count does not (the callback sees every call in this context, copies and threads included).
    return CompileResult(
        program, optimizer, parameters, time.monotonic() - started, counter.calls, usage.figures()["lm_tokens"]
    )


def _choose_demos(spec: RoutingModuleSpec, optimizer: str, train: pd.DataFrame) -> tuple[dspy.Module, dict]:
    if optimizer == "knn":
        parameters = {"k": DEFAULT_K}
        return RetrievedDemos.compile(spec, train, **parameters), parameters
    parameters = {"demos_per_label": DEFAULT_DEMOS_PER_LABEL}
    program = spec.program()
    program.demos = class_medoid_demos(spec, train, per_label=parameters["demos_per_label"])
    return program, parameters


def _calibrate(
    spec: RoutingModuleSpec,
    optimizer: str,
    train: pd.DataFrame,
    student_lm: dspy.LM,
    adapter: dspy.Adapter,
    seed: int,
    max_class_recall_drop: float,
) -> tuple[dspy.Module, dict, int]:
    """Fit the label bias on the local model's scores; the forward passes count as LM calls."""
    from cogniverse_resources import stack
    from cogniverse_resources.label_scorer import LocalLabelScorer, shared_scorer
    from cogniverse_resources.lm import LOCAL_MODEL

    if not can_calibrate(spec):
        raise ValueError(f"{optimizer}: {spec.name} writes more than its label; use another optimizer")
    if student_lm.model != LOCAL_MODEL:
        raise ValueError(
            f"{optimizer}: fits label token ids of the local model only, the student is {student_lm.model}"
        )
    read_state = optimizer == "calibrated_state"
    # The state read is the one a served module makes, so compile shares the process's loaded model.
    scorer = shared_scorer(stack.local_model_path()) if read_state else LocalLabelScorer(stack.local_model_path())
    calls_before = scorer.calls
    program, parameters = CalibratedLabels.compile(
        spec, train, scorer, adapter, LOCAL_MODEL, seed, read_state, max_class_recall_drop
    )
    return program, parameters, scorer.calls - calls_before


# Below this many iterations MIPROv2 and SIMBA run small — a few dozen LM calls on a dozen examples,
# for tests and quick checks on a slow LM: MIPROv2 tries the original instruction and one proposal
# in ``max_iterations`` trials, SIMBA takes one step of two candidates on a batch of at most 32.
# From it on (RoutingConfig's default is 100) they run as configured below.
SMALL_BUDGET_ITERATIONS = 10


def _search(
    spec: RoutingModuleSpec,
    optimizer: str,
    trainset: list[dspy.Example],
    valset: list[dspy.Example] | None,
    student_lm: dspy.LM,
    teacher_lm: dspy.LM,
    max_iterations: int,
    seed: int,
    num_threads: int,
) -> tuple[dspy.Module, dict]:
    metric = exact_match(spec)
    student = spec.program()
    if optimizer == "bootstrap":
        parameters = {"max_bootstrapped_demos": 4, "max_labeled_demos": 8, "max_rounds": 1}
        teleprompter = dspy.BootstrapFewShot(metric=metric, teacher_settings={"lm": teacher_lm}, **parameters)
        return teleprompter.compile(student, trainset=trainset), parameters
    small = max_iterations < SMALL_BUDGET_ITERATIONS
    if optimizer == "mipro":
        parameters = {"auto": "light", "max_bootstrapped_demos": 3, "max_labeled_demos": 4}
        options = {}
        if small:
            parameters = {"auto": None, "num_candidates": 2, "max_bootstrapped_demos": 2, "max_labeled_demos": 4}
            options = {"num_trials": max(1, max_iterations), "minibatch": False}
        teleprompter = dspy.MIPROv2(
            metric=metric,
            prompt_model=teacher_lm,
            task_model=student_lm,
            num_threads=num_threads,
            seed=seed,
            verbose=False,
            **parameters,
        )
        program = teleprompter.compile(student, trainset=trainset, valset=valset, seed=seed, **options)
        return program, {**parameters, **options}
    if optimizer == "simba":
        bsize = min(SIMBA_BATCH_SIZE, len(trainset)) if small else SIMBA_BATCH_SIZE
        if len(trainset) < max(2, bsize):
            raise ValueError(f"SIMBA needs at least {max(2, bsize)} training examples, got {len(trainset)}")
        parameters = {"bsize": SIMBA_BATCH_SIZE, "num_candidates": 4, "max_steps": max(1, min(4, max_iterations // 25))}
        if small:
            parameters = {"bsize": bsize, "num_candidates": 2, "max_steps": 1}
        teleprompter = dspy.SIMBA(metric=metric, num_threads=num_threads, **parameters)
        return teleprompter.compile(student, trainset=trainset, seed=seed), parameters
    parameters = {"max_metric_calls": max(len(trainset), max_iterations * 2), "reflection_minibatch_size": 3}
    teleprompter = dspy.GEPA(
        metric=feedback_metric(spec),
        reflection_lm=teacher_lm,
        num_threads=num_threads,
        track_stats=False,
        seed=seed,
        **parameters,
    )
    return teleprompter.compile(student, trainset=trainset, valset=valset or trainset), parameters


def program_summary(program: dspy.Module) -> dict:
    """What changed in a compiled program: demos (or the retrieval pool) and instructions per predictor."""
    predictors = program.named_predictors()
    pool = getattr(program, "pool", None)
    return {
        "demos": len(pool) if pool is not None else sum(len(predictor.demos) for _, predictor in predictors),
        "instructions": {name: predictor.signature.instructions for name, predictor in predictors},
    }
