"""The calibrated module: a per-label bias fitted on the local model's label scores, served as
``logit_bias``; restored exactly from its JSON state."""

import json

import dspy
import numpy as np
import pandas as pd
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.calibrated import (
    SHRINK_STEPS,
    CalibratedLabels,
    answer_prefix,
    can_calibrate,
    classifier_and_fit_votes,
    fit_bias,
    fit_bias_and_weight,
    recall_drops_within,
    shrink_to_gate,
    state_probe_unavailable,
)
from cogniverse_assets.modules.demos import gold_frame
from cogniverse_assets.modules.label_classifier import MIN_LABELED, softmax_rows
from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.modules.state_probe import StateProbe
from cogniverse_assets.optimizers import compile_module
from cogniverse_assets.scoring import score_program
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


def _label_trade() -> tuple[np.ndarray, np.ndarray]:
    """A model that answers "a" to most "b" queries: the likeliest shift moves answers to "b" and,
    on the way, takes some "a" queries with it."""
    rng = np.random.default_rng(1)
    gold = np.repeat([0, 1], 100)
    evidence = rng.normal(0, 1, size=(200, 2))
    evidence[np.arange(200), gold] += 1.0
    return log_normalized(evidence + np.array([1.5, 0.0])), gold


def test_the_shift_is_shrunk_until_no_label_loses_more_recall_than_the_gate_allows():
    scores, gold = _label_trade()
    bias = fit_bias(scores, ["ab"[i] for i in gold], ("a", "b"))
    assert not recall_drops_within(scores, bias, gold, 0.10)  # the likeliest shift costs "a" too much
    shrink = shrink_to_gate(scores, bias, gold, 0.10)
    assert 0 < shrink < 1
    assert recall_drops_within(scores, shrink * bias, gold, 0.10)
    larger = SHRINK_STEPS[SHRINK_STEPS.index(shrink) - 1]
    assert not recall_drops_within(scores, larger * bias, gold, 0.10)  # the largest factor that keeps within
    before = (scores.argmax(axis=1) == gold).mean()
    assert ((scores + shrink * bias).argmax(axis=1) == gold).mean() > before  # and it still lifts accuracy


def test_a_shift_that_costs_no_label_recall_is_served_whole_and_no_drop_allowed_means_no_shift():
    scores, gold = _label_trade()
    bias = fit_bias(scores, ["ab"[i] for i in gold], ("a", "b"))
    assert shrink_to_gate(scores, bias, gold, 1.0) == 1.0
    # Allowed no drop at all, only a factor that moves no "a" answer away from "a" remains.
    strict = shrink_to_gate(scores, bias, gold, 0.0)
    assert recall_drops_within(scores, strict * bias, gold, 0.0)
    assert strict < shrink_to_gate(scores, bias, gold, 0.10)


def _scores_and_votes(classifier_signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weak LM scores, and classifier log-probabilities with ``classifier_signal`` of their own on
    the right label (0: noise, independent of the gold label)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, size=400)
    evidence = rng.normal(0, 1, size=(400, 3))
    evidence[np.arange(400), gold] += 0.5
    vote = rng.normal(0, 1, size=(400, 3))
    vote[np.arange(400), gold] += classifier_signal
    return gold, log_normalized(evidence), log_normalized(vote)


def test_the_classifier_weight_follows_how_much_the_classifier_knows():
    labels = ("a", "b", "c")
    gold, scores, informative = _scores_and_votes(classifier_signal=2.0)
    bias, weight = fit_bias_and_weight(scores, informative, [labels[i] for i in gold], labels)
    assert weight > 0.5
    alone = (scores + fit_bias(scores, [labels[i] for i in gold], labels)).argmax(axis=1)
    voted = (scores + bias + weight * informative).argmax(axis=1)
    assert (voted == gold).mean() > (alone == gold).mean() + 0.1
    gold, scores, noise = _scores_and_votes(classifier_signal=0.0, seed=1)
    assert fit_bias_and_weight(scores, noise, [labels[i] for i in gold], labels)[1] < 0.1


def test_the_classifier_stays_out_below_its_data_floor_and_says_why():
    few = gold_frame(_train(ROUTING, MIN_LABELED - 1))
    classifier, votes, note = classifier_and_fit_votes(ROUTING, few, few.index[:10], seed=0)
    assert classifier is None and not votes.any() and f"< {MIN_LABELED}" in note
    enough = gold_frame(_train(ROUTING))
    classifier, votes, note = classifier_and_fit_votes(ROUTING, enough, enough.index[:10], seed=0)
    assert classifier is not None and note.startswith("on") and votes.shape == (10, len(ROUTING.labels))


def test_a_calibrated_module_with_the_classifier_reloads_its_exact_shift():
    train = gold_frame(_train(ROUTING))
    classifier, _, _ = classifier_and_fit_votes(ROUTING, train, train.index[:1], seed=0)
    tokens = {label: index for index, label in enumerate(ROUTING.labels)}
    bias = dict(zip(ROUTING.labels, np.linspace(-1, 1, len(ROUTING.labels))))
    program = CalibratedLabels(ROUTING, bias, tokens, LOCAL_MODEL, classifier, classifier_weight=1.2)
    restored = ROUTING.load_program({"state": json.loads(json.dumps(program.dump_state()))})
    queries = [ROUTING.inputs(row) for row in load_queries("eval")[:20]]
    assert [restored.logit_bias(row) for row in queries] == [program.logit_bias(row) for row in queries]
    # the vote moves the shift from query to query; the bias alone would not
    assert len({json.dumps(program.logit_bias(row)) for row in queries}) > 1


def test_a_calibrated_module_with_a_state_probe_reloads_its_exact_shift():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(60, 16))
    labels = [ROUTING.labels[i % len(ROUTING.labels)] for i in range(60)]
    tokens = {label: index for index, label in enumerate(ROUTING.labels)}
    bias = dict(zip(ROUTING.labels, np.linspace(-1, 1, len(ROUTING.labels))))
    probe = StateProbe.fit(states, labels, regularization=0.1)
    program = CalibratedLabels(
        ROUTING, bias, tokens, LOCAL_MODEL, state_probe=probe, state_weight=0.7, prompt_layout="reminder_first"
    )
    restored = ROUTING.load_program({"state": json.loads(json.dumps(program.dump_state()))})
    assert restored.prompt_layout == "reminder_first" and restored.state_weight == 0.7
    assert all(np.array_equal(restored.state_shift(state), program.state_shift(state)) for state in states)
    with pytest.raises(ValueError, match="one vote"):
        CalibratedLabels(ROUTING, bias, tokens, LOCAL_MODEL, program_classifier(), 1.0, probe, 0.7)


def program_classifier():
    train = gold_frame(_train(ROUTING))
    return classifier_and_fit_votes(ROUTING, train, train.index[:1], seed=0)[0]


def test_the_state_probe_is_trained_only_where_the_registry_says_and_above_its_data_floor():
    enough = [str(label) for label in gold_frame(_train(ROUTING))["label"]]
    assert state_probe_unavailable(ROUTING, enough) is None
    assert f"< {MIN_LABELED}" in state_probe_unavailable(ROUTING, enough[: MIN_LABELED - 1])
    assert "does not read" in state_probe_unavailable(get_module("modality"), enough)


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
    """Served (the stack's LM server, ``logit_bias``) on 40 queries: the reloaded module answers as the
    compiled one, and the server picks what the shifted label scores pick. Better: on all 130 corpus
    eval queries, by the label scores (their argmax is what the schema-constrained module answers:
    the agreement above), because 40 queries cannot tell a real gain from noise."""
    resource = LanguageModelResource()
    lm, adapter = resource.student(), resource.adapter()
    result = compile_module(ROUTING, "calibrated", _train(ROUTING), lm, lm, adapter)
    program = result.program
    assert result.lm_calls == result.parameters["fitted_on"] == 50
    assert result.parameters["fit_accuracy_after"] > result.parameters["fit_accuracy_before"]
    assert result.parameters["shrunk_to_gate"] > 0 and result.parameters["max_class_recall_drop"] == 0.15

    queries = load_queries("eval")
    inputs = [ROUTING.inputs(row) for row in queries]
    gold = np.array([ROUTING.labels.index(row["agent"]) for row in queries])
    restored = ROUTING.load_program({"state": json.loads(json.dumps(program.dump_state()))})
    assert isinstance(restored, CalibratedLabels) and restored.bias == program.bias
    assert result.parameters["classifier"].startswith("on") and program.classifier_weight > 0
    assert restored.classifier_weight == program.classifier_weight
    assert all(np.array_equal(restored.shift(row), program.shift(row)) for row in inputs)
    served_inputs = inputs[:EVAL_QUERIES]
    with dspy.context(lm=lm, adapter=adapter):
        calibrated = [ROUTING.label_of(program(**row)) for row in served_inputs]
        reloaded = [ROUTING.label_of(restored(**row)) for row in served_inputs]
    assert reloaded == calibrated

    scorer = LocalLabelScorer(stack.local_model_path())
    tokens = [program.label_tokens[label] for label in ROUTING.labels]
    scores = np.array(
        [scorer.scores(adapter.format(ROUTING.signature, [], row), answer_prefix(ROUTING), tokens) for row in inputs]
    )
    shifted = (scores + np.array([program.shift(row) for row in inputs])).argmax(axis=1)
    agreement = np.mean([ROUTING.labels[index] == answer for index, answer in zip(shifted, calibrated)])
    assert agreement >= 0.9, agreement
    accuracy = {"unoptimized": np.mean(scores.argmax(axis=1) == gold), "calibrated": np.mean(shifted == gold)}
    assert accuracy["calibrated"] > accuracy["unoptimized"], accuracy


@pytest.mark.lm
def test_routing_with_the_lm_state_vote_beats_the_unoptimized_module_and_answers_the_same_in_any_order(local_lm):
    """Compiled on 60 gold examples (the probe's data floor is 50): answered in process, the reloaded
    module gives the compiled one's answers even in the reverse order of queries (each prompt is
    split into the same batches whatever came before). Better: on all 130 corpus eval queries, the
    argmax of the shifted scores against the argmax of the same pass's unshifted ones."""
    resource = LanguageModelResource()
    lm, adapter = resource.student(), resource.adapter(ROUTING.prompt_layout)
    result = compile_module(ROUTING, "calibrated_state", _train(ROUTING, 60), lm, lm, adapter)
    program = result.program
    assert result.lm_calls == result.parameters["probe_trained_on"] == 60
    assert result.parameters["state_probe"].startswith("on") and program.state_weight > 0
    restored = ROUTING.load_program({"state": json.loads(json.dumps(program.dump_state()))})
    inputs = [ROUTING.inputs(row) for row in load_queries("eval")]
    with dspy.context(lm=dspy.LM("openai/not-called")):  # answered in process: no LM call is made
        answered = [program(**row) for row in inputs[:20]]
        forward = [ROUTING.label_of(prediction) for prediction in answered]
        backward = [ROUTING.label_of(restored(**row)) for row in reversed(inputs[:20])]
    assert backward[::-1] == forward

    scorer = LocalLabelScorer(stack.local_model_path())
    read = [program.read(scorer, row) for row in inputs]
    scores = np.array([pair[0] for pair in read])
    shifted = np.array([scores[i] + program.state_shift(state) for i, (_, state) in enumerate(read)])
    assert [ROUTING.labels[i] for i in shifted[:20].argmax(axis=1)] == forward  # a fresh model file reads the same
    # The answer's confidence is the module's own probability of it, query by query.
    own = [CalibratedLabels.own_probability(prediction) for prediction in answered]
    np.testing.assert_allclose(own, softmax_rows(shifted[:20]).max(axis=1), atol=1e-6)
    assert len({round(p, 3) for p in own}) > 1 and not any(k.startswith("_") for k in answered[0].keys())
    examples = [
        dspy.Example(**ROUTING.inputs(row), agent=row["agent"]).with_inputs(*ROUTING.inputs(row))
        for row in load_queries("eval")[:3]
    ]
    assert score_program(ROUTING, restored, examples, dspy.LM("openai/not-called"), adapter).lm_calls == 3
    gold = np.array([ROUTING.labels.index(row["agent"]) for row in load_queries("eval")])
    accuracy = {
        "unoptimized": np.mean(scores.argmax(axis=1) == gold),
        "with state": np.mean(shifted.argmax(axis=1) == gold),
    }
    assert accuracy["with state"] > accuracy["unoptimized"], accuracy
