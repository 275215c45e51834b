"""The calibrated module: a per-label bias fitted on the local model's label scores, served as
``logit_bias``; restored exactly from its JSON state."""

import json

import dspy
import numpy as np
import pandas as pd
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.calibrated import CalibratedLabels, answer_prefix, can_calibrate, fit_bias
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.optimizers import compile_module
from cogniverse_resources import stack
from cogniverse_resources.label_scorer import LocalLabelScorer, log_normalized
from cogniverse_resources.lm import LOCAL_MODEL, LanguageModelResource

ROUTING = get_module("routing")
EVAL_QUERIES = 40


def _train(spec, n=130) -> pd.DataFrame:
    rows = pd.DataFrame(load_queries("train")).rename(columns={spec.corpus_label_key: "label"})
    return rows.iloc[:n].assign(provenance="human")


def test_the_fitted_bias_undoes_a_prior_shift_of_the_scores():
    rng = np.random.default_rng(0)
    labels = ("a", "b", "c")
    gold = rng.integers(0, 3, size=300)
    evidence = rng.normal(0, 1, size=(300, 3))
    evidence[np.arange(300), gold] += 2.0  # the right label leads by 2 on average
    prior = np.array([1.5, 0.0, -1.5])  # a model that leans to "a" and away from "c"
    scores = log_normalized(evidence + prior)
    bias = fit_bias(scores, [labels[i] for i in gold], labels)
    assert np.allclose(bias, -prior, atol=0.35)
    before = (scores.argmax(axis=1) == gold).mean()
    after = ((scores + bias).argmax(axis=1) == gold).mean()
    assert after > before + 0.05


def test_only_a_module_that_writes_a_lone_label_is_calibrated():
    assert can_calibrate(ROUTING) and can_calibrate(get_module("modality"))
    cross_modal = get_module("cross_modal")
    assert not can_calibrate(cross_modal)
    lm = dspy.LM(LOCAL_MODEL)
    with pytest.raises(ValueError, match="writes more than its label"):
        compile_module(cross_modal, "calibrated", _train(cross_modal), lm, lm, dspy.JSONAdapter())
    hosted = dspy.LM("openai/gpt-4o-mini")
    with pytest.raises(ValueError, match="local model only"):
        compile_module(ROUTING, "calibrated", _train(ROUTING), hosted, hosted, dspy.JSONAdapter())


def test_a_calibrated_module_refuses_another_model_than_its_own():
    tokens = {label: index for index, label in enumerate(ROUTING.labels)}
    program = CalibratedLabels(ROUTING, dict.fromkeys(ROUTING.labels, 0.0), tokens, LOCAL_MODEL)
    with dspy.context(lm=dspy.LM("openai/gpt-4o-mini")), pytest.raises(ValueError, match="calibrated for"):
        program(query="summarize the keynote", entities=["keynote"])


@pytest.mark.lm
def test_calibrated_routing_beats_the_unoptimized_module_and_reloads_exactly(local_lm):
    resource = LanguageModelResource()
    lm, adapter = resource.student(), resource.adapter()
    result = compile_module(ROUTING, "calibrated", _train(ROUTING), lm, lm, adapter)
    program = result.program
    assert result.lm_calls == result.parameters["fitted_on"] == 50
    assert result.parameters["fit_accuracy_after"] > result.parameters["fit_accuracy_before"]

    queries = load_queries("eval")[:EVAL_QUERIES]
    inputs = [ROUTING.inputs(row) for row in queries]
    gold = [row["agent"] for row in queries]
    restored = ROUTING.load_program({"state": json.loads(json.dumps(program.dump_state()))})
    assert isinstance(restored, CalibratedLabels) and restored.bias == program.bias
    with dspy.context(lm=lm, adapter=adapter):
        unoptimized = [ROUTING.label_of(ROUTING.program()(**row)) for row in inputs]
        calibrated = [ROUTING.label_of(program(**row)) for row in inputs]
        reloaded = [ROUTING.label_of(restored(**row)) for row in inputs]
    assert reloaded == calibrated
    accuracy = {
        name: np.mean([answer == label for answer, label in zip(answers, gold)])
        for name, answers in (("unoptimized", unoptimized), ("calibrated", calibrated))
    }
    assert accuracy["calibrated"] > accuracy["unoptimized"], accuracy

    # The server's logit_bias picks what the shifted label scores pick.
    scorer = LocalLabelScorer(stack.local_model_path())
    tokens = [program.label_tokens[label] for label in ROUTING.labels]
    bias = np.array([program.bias[label] for label in ROUTING.labels])
    shifted = [
        ROUTING.labels[
            int(
                np.argmax(
                    scorer.scores(adapter.format(ROUTING.signature, [], row), answer_prefix(ROUTING), tokens) + bias
                )
            )
        ]
        for row in inputs
    ]
    agreement = np.mean([a == b for a, b in zip(shifted, calibrated)])
    assert agreement >= 0.9, agreement
