"""All four DSPy optimizers really run and really change the program (scripted DummyLM)."""

import dspy
import pandas as pd
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.metrics import exact_match
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.optimizers import OPTIMIZERS, compile_module, program_summary, to_examples
from tests.scripted_lm import scripted_lm

SPEC = get_module("modality")


@pytest.fixture(scope="module")
def examples():
    rows = pd.DataFrame(load_queries("train")).rename(columns={"modality": "label"})
    return to_examples(SPEC, rows.iloc[:40])


def _accuracy(program, lm, examples):
    metric = exact_match(SPEC)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        return sum(metric(example, program(**example.inputs())) for example in examples) / len(examples)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_compiles_a_changed_and_better_program(optimizer, examples):
    lm = scripted_lm(SPEC, examples, fallback_label="video")
    base = SPEC.program()
    result = compile_module(SPEC, optimizer, examples[:36], lm, lm, dspy.JSONAdapter(), max_iterations=100, valset=examples[36:])
    before, after = program_summary(base), program_summary(result.program)
    assert after != before  # demos or instructions changed
    holdout = examples[30:]
    assert _accuracy(result.program, lm, holdout) > _accuracy(base, lm, holdout)
    assert result.lm_calls > 0 and result.optimizer == optimizer


def test_simba_refuses_a_set_smaller_than_its_batch(examples):
    lm = scripted_lm(SPEC, examples, fallback_label="video")
    with pytest.raises(ValueError, match="SIMBA needs at least 32"):
        compile_module(SPEC, "simba", examples[:10], lm, lm, dspy.JSONAdapter())


def test_compiled_module_round_trips_through_json(examples):
    lm = scripted_lm(SPEC, examples, fallback_label="video")
    result = compile_module(SPEC, "bootstrap", examples, lm, lm, dspy.JSONAdapter())
    import json

    payload = json.loads(json.dumps({"state": result.program.dump_state()}, default=str))
    restored = SPEC.load_program(payload)
    assert program_summary(restored) == program_summary(result.program)
