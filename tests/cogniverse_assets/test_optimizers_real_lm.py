"""Each DSPy optimizer once on the real local LM (Qwen2.5-Coder-0.5B via llama.cpp), on a budget
small enough for two cores (``max_iterations`` below ``SMALL_BUDGET_ITERATIONS`` runs MIPROv2 and
SIMBA small; about 10–45 LM calls each, a few minutes in all).

For each: every LM call is seen by a DSPy callback (copies of the LMs included) and stays within
the budget, the reported ``lm_calls`` are counted (> 0, never more than were made), the program
changed — or, for an optimizer that measures candidates, it kept the original only because no
measured candidate beat it — its demos come from the training rows, and it answers a held-out
query with a canonical label."""

from __future__ import annotations

import dspy
import pandas as pd
import pytest
from dspy.utils.callback import BaseCallback

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.optimizers import SMALL_BUDGET_ITERATIONS, compile_module, program_summary, to_examples
from cogniverse_resources.lm import LanguageModelResource

pytestmark = pytest.mark.lm

SPEC = get_module("modality")
BUDGET = 45  # LM calls one optimizer may make here
HOLDOUT = slice(30, 40)  # never given to an optimizer
# optimizer: (training rows, selection rows carved after them, max_iterations)
CASES = {
    "bootstrap": (10, 0, 3),
    "mipro": (8, 4, 2),
    "simba": (4, 0, 3),
    "gepa": (6, 3, 5),
}


class CallCounter(BaseCallback):
    """Every LM call made in its ``dspy.context``, by LM instance (copies are separate instances)."""

    def __init__(self) -> None:
        self.instances: list[object] = []

    def on_lm_start(self, call_id, instance, inputs) -> None:  # noqa: ANN001 - DSPy's hook
        self.instances.append(instance)

    @property
    def calls(self) -> int:
        return len(self.instances)


@pytest.fixture(scope="module")
def rows():
    return pd.DataFrame(load_queries("train")).rename(columns={"modality": "label"}).iloc[:40]


def _kept_after_measuring(program: dspy.Module) -> bool:
    """MIPROv2 and SIMBA record the candidates they scored: the original was kept only if at
    least one other candidate was scored and none scored higher."""
    candidates = getattr(program, "candidate_programs", None) or []
    if len(candidates) < 2:
        return False
    best = max(candidate["score"] for candidate in candidates)
    return any(
        candidate["score"] == best and program_summary(candidate["program"]) == program_summary(SPEC.program())
        for candidate in candidates
    )


@pytest.mark.parametrize("optimizer", list(CASES))
def test_optimizer_on_the_local_lm(optimizer, local_lm, rows):
    n_train, n_selection, max_iterations = CASES[optimizer]
    assert max_iterations < SMALL_BUDGET_ITERATIONS
    train = rows.iloc[:n_train]
    selection = rows.iloc[n_train : n_train + n_selection] if n_selection else None
    held_out = to_examples(SPEC, rows.iloc[HOLDOUT])
    resource = LanguageModelResource()  # local_lm points it at the test's server
    student, teacher = resource.student(), resource.teacher()
    counter = CallCounter()
    with dspy.context(callbacks=[counter]):
        result = compile_module(
            SPEC,
            optimizer,
            train,
            student,
            teacher,
            resource.adapter(),
            max_iterations=max_iterations,
            selection=selection,
            seed=0,
        )
    print(f"{optimizer}: {counter.calls} LM calls made, {result.lm_calls} counted, {result.seconds:.0f}s")

    assert result.optimizer == optimizer
    assert 0 < result.lm_calls <= counter.calls <= BUDGET

    summary, base = program_summary(result.program), program_summary(SPEC.program())
    if optimizer == "bootstrap":
        assert summary["demos"] > 0  # bootstrapped and labeled demos
    elif optimizer == "gepa":
        # GEPA keeps no record of rejected candidates: a kept original must at least have had the
        # reflection LM (the teacher) propose an alternative.
        assert summary != base or any(instance is teacher for instance in counter.instances)
    else:
        assert summary != base or _kept_after_measuring(result.program)

    demos = [demo for _, predictor in result.program.named_predictors() for demo in predictor.demos]
    assert {demo.query for demo in demos} <= set(train["query"])  # never the selection or the held-out rows
    assert not {demo.query for demo in demos} & {example.query for example in held_out}

    with dspy.context(lm=student, adapter=resource.adapter()):
        answer = result.program(**held_out[0].inputs())
    assert getattr(answer, SPEC.label_field) in SPEC.labels
