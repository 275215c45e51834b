"""Compiling a routing module with one of DSPy's optimizers, with LM call and token accounting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dspy
import pandas as pd

from cogniverse_assets.modules.metrics import exact_match, feedback_metric
from cogniverse_assets.modules.registry import RoutingModuleSpec

OPTIMIZERS = ("bootstrap", "mipro", "simba", "gepa")
OPTIMIZER_CLASSES = {"bootstrap": "BootstrapFewShot", "mipro": "MIPROv2", "simba": "SIMBA", "gepa": "GEPA"}
SIMBA_BATCH_SIZE = 32


def to_examples(spec: RoutingModuleSpec, frame: pd.DataFrame) -> list[dspy.Example]:
    """Rows (query, detected_modalities, entities, label) → DSPy examples with the module's inputs."""
    examples = []
    for row in frame.to_dict("records"):
        inputs = spec.inputs({key: _plain(value) for key, value in row.items()})
        example = dspy.Example(**inputs, **{spec.label_field: row["label"]})
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
    trainset: list[dspy.Example],
    student_lm: dspy.LM,
    teacher_lm: dspy.LM,
    adapter: dspy.Adapter,
    max_iterations: int = 100,
    valset: list[dspy.Example] | None = None,
    seed: int = 0,
    num_threads: int = 1,
) -> CompileResult:
    """Compile ``spec``'s unoptimized program with ``optimizer`` on ``trainset``.

    ``valset`` is only for optimizers that select among candidates (MIPROv2, GEPA) and must be
    carved out of the training data: the held-out validation split never reaches this function.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    metric = exact_match(spec)
    student = spec.program()
    usage = LMUsage([student_lm, teacher_lm])
    started = time.monotonic()
    with dspy.context(lm=student_lm, adapter=adapter):
        if optimizer == "bootstrap":
            parameters = {"max_bootstrapped_demos": 4, "max_labeled_demos": 8, "max_rounds": 1}
            teleprompter = dspy.BootstrapFewShot(metric=metric, teacher_settings={"lm": teacher_lm}, **parameters)
            program = teleprompter.compile(student, trainset=trainset)
        elif optimizer == "mipro":
            parameters = {"auto": "light", "max_bootstrapped_demos": 3, "max_labeled_demos": 4}
            teleprompter = dspy.MIPROv2(
                metric=metric, prompt_model=teacher_lm, task_model=student_lm, auto="light",
                num_threads=num_threads, seed=seed, verbose=False,
                max_bootstrapped_demos=parameters["max_bootstrapped_demos"], max_labeled_demos=parameters["max_labeled_demos"],
            )
            program = teleprompter.compile(student, trainset=trainset, valset=valset, seed=seed)
        elif optimizer == "simba":
            if len(trainset) < SIMBA_BATCH_SIZE:
                raise ValueError(f"SIMBA needs at least {SIMBA_BATCH_SIZE} training examples, got {len(trainset)}")
            parameters = {"bsize": SIMBA_BATCH_SIZE, "num_candidates": 4, "max_steps": max(1, min(4, max_iterations // 25))}
            teleprompter = dspy.SIMBA(metric=metric, num_threads=num_threads, **parameters)
            program = teleprompter.compile(student, trainset=trainset, seed=seed)
        else:
            parameters = {"max_metric_calls": max(len(trainset), max_iterations * 2), "reflection_minibatch_size": 3}
            teleprompter = dspy.GEPA(
                metric=feedback_metric(spec), reflection_lm=teacher_lm, num_threads=num_threads,
                track_stats=False, seed=seed, **parameters,
            )
            program = teleprompter.compile(student, trainset=trainset, valset=valset or trainset)
    figures = usage.figures()
    return CompileResult(program, optimizer, parameters, time.monotonic() - started, figures["lm_calls"], figures["lm_tokens"])


def program_summary(program: dspy.Module) -> dict:
    """What changed in a compiled program: demos and instructions per predictor."""
    predictors = program.named_predictors()
    return {
        "demos": sum(len(predictor.demos) for _, predictor in predictors),
        "instructions": {name: predictor.signature.instructions for name, predictor in predictors},
    }
