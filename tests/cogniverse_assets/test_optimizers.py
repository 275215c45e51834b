"""What each DSPy optimizer really does with the data it is given (scripted DummyLM, pure logic).
The demo optimizers (knn, labeled), which make no LM call, are tested in modules/test_demos.py;
each optimizer on the real local LM in test_optimizers_real_lm.py.

The scripted LM (tests/scripted_lm.py) never sees a gold label: it follows keyword rules written
in its instruction, else copies the most similar demo, else answers a fixed label. The assertions
are about what the optimizer must have done — its demos come from the training rows with their
training labels, the held-out rows never reach a prompt, MIPROv2 and GEPA adopt their proposer's
instruction, the LM calls are counted exactly — not that the result is "better"."""

import json

import dspy
import pandas as pd
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.optimizers import DSPY_OPTIMIZERS, compile_module, program_summary
from tests.scripted_lm import HINT, scripted_lm

SPEC = get_module("modality")
TRAIN = slice(0, 32)  # SIMBA needs a batch of 32
HOLDOUT = slice(32, 42)  # disjoint from everything an optimizer is given
SELECTION = 6  # MIPROv2 and GEPA select on the last rows of the training slice, as trained_module does
SELECTING = {"mipro", "gepa"}


@pytest.fixture(scope="module")
def rows():
    return pd.DataFrame(load_queries("train")).rename(columns={"modality": "label"}).iloc[:42]


def _demos(program: dspy.Module) -> list[dspy.Example]:
    return [demo for _, predictor in program.named_predictors() for demo in predictor.demos]


def _instruction(program: dspy.Module) -> str:
    ((_, predictor),) = program.named_predictors()
    return predictor.signature.instructions


def _compile(optimizer: str, rows: pd.DataFrame, lm):
    train = rows.iloc[TRAIN]
    selection = None
    if optimizer in SELECTING:
        train, selection = train.iloc[:-SELECTION], train.iloc[-SELECTION:]
    return compile_module(
        SPEC, optimizer, train, lm, lm, dspy.JSONAdapter(), max_iterations=100, selection=selection, seed=0
    )


@pytest.mark.parametrize("optimizer", DSPY_OPTIMIZERS)
def test_optimizer_uses_training_rows_only(optimizer, rows):
    assert set(rows.iloc[TRAIN]["query"]).isdisjoint(rows.iloc[HOLDOUT]["query"])
    lm = scripted_lm(SPEC, fallback_label="video")
    base = SPEC.program()
    result = _compile(optimizer, rows, lm)
    script = lm.answers
    assert result.optimizer == optimizer and result.lm_calls > 0

    # Nothing held out reached any prompt.
    holdout = list(rows.iloc[HOLDOUT]["query"])
    assert not [query for query in holdout if any(query in prompt for prompt in script.prompts)]

    # Every demo is a training row carrying that row's training label.
    train_labels = dict(zip(rows.iloc[TRAIN]["query"], rows.iloc[TRAIN]["label"]))
    demos = _demos(result.program)
    assert [demo.query for demo in demos if demo.query not in train_labels] == []
    assert [demo.query for demo in demos if getattr(demo, SPEC.label_field) != train_labels[demo.query]] == []
    assert program_summary(result.program) != program_summary(base)  # demos or instructions changed


@pytest.mark.parametrize("optimizer", DSPY_OPTIMIZERS)
def test_lm_calls_are_counted_exactly(optimizer, rows):
    lm = scripted_lm(SPEC, fallback_label="video")
    result = _compile(optimizer, rows, lm)
    assert lm.answers.calls > 0
    assert result.lm_calls == lm.answers.calls  # every call the LM (and its copies) served


def test_bootstrap_keeps_only_demos_its_teacher_got_right(rows):
    lm = scripted_lm(SPEC, fallback_label="video")
    result = _compile("bootstrap", rows, lm)
    demos = _demos(result.program)
    bootstrapped = [demo for demo in demos if demo.get("augmented")]
    assert bootstrapped and len(demos) <= result.parameters["max_labeled_demos"]
    assert _instruction(result.program) == _instruction(SPEC.program())  # BootstrapFewShot writes no instruction
    # A bootstrapped demo holds the teacher's own answer, kept only because the metric accepted it:
    # the scripted teacher is often wrong (keyword-free queries, dissimilar demos), so this checks the filter.
    train_labels = dict(zip(rows.iloc[TRAIN]["query"], rows.iloc[TRAIN]["label"]))
    assert [demo.query for demo in bootstrapped if getattr(demo, SPEC.label_field) != train_labels[demo.query]] == []
    assert [demo for demo in demos if not demo.get("augmented")], "the remaining slots hold labeled training rows"


@pytest.mark.parametrize("optimizer", sorted(SELECTING))
def test_mipro_and_gepa_adopt_their_proposers_instruction(optimizer, rows):
    lm = scripted_lm(SPEC, fallback_label="video")
    result = _compile(optimizer, rows, lm)
    instruction = _instruction(result.program)
    assert instruction != _instruction(SPEC.program())
    assert HINT in instruction  # the proposer's (or reflection LM's) text, not the original
    if optimizer == "gepa":
        assert _demos(result.program) == []  # GEPA evolves instructions only
    # The proposer was really asked: its signature appears in the prompts.
    field = "`proposed_instruction`" if optimizer == "mipro" else "`new_instruction`"
    assert any(field in prompt for prompt in lm.answers.prompts)


def test_simba_refuses_a_set_smaller_than_its_batch(rows):
    lm = scripted_lm(SPEC, fallback_label="video")
    with pytest.raises(ValueError, match="SIMBA needs at least 32"):
        compile_module(SPEC, "simba", rows.iloc[:10], lm, lm, dspy.JSONAdapter())
    assert lm.answers.calls == 0  # refused before any LM call


def test_compiled_module_round_trips_through_json(rows):
    lm = scripted_lm(SPEC, fallback_label="video")
    result = compile_module(SPEC, "bootstrap", rows.iloc[TRAIN], lm, lm, dspy.JSONAdapter())
    payload = json.loads(json.dumps({"state": result.program.dump_state()}, default=str))
    restored = SPEC.load_program(payload)
    assert program_summary(restored) == program_summary(result.program)
