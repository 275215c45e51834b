"""The distilled fast path: its data floor, its out-of-fold threshold rule, and exact reloading."""

import json

import numpy as np
import pandas as pd
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.fast_path import (
    MAX_CASCADE_LOSS,
    FastPath,
    cascade_answers,
    choose_threshold,
    train_fast_path,
)
from cogniverse_assets.modules.label_classifier import MIN_LABELED
from cogniverse_assets.modules.registry import get_module

SPEC = get_module("modality")


def _train(n: int, provenance: str = "human") -> pd.DataFrame:
    rows = pd.DataFrame(load_queries("train")).rename(columns={"modality": "label"})
    return rows.iloc[:n].assign(provenance=provenance)


def test_off_below_its_data_floor_and_says_why():
    result = train_fast_path(SPEC, _train(MIN_LABELED - 1), lm_accuracy_estimate=0.7)
    assert result.fast_path is None and f"< {MIN_LABELED}" in result.reason
    # router self-labels are not gold: 300 of them still leave the fast path off
    result = train_fast_path(SPEC, _train(300, provenance="router"), lm_accuracy_estimate=0.7)
    assert result.fast_path is None and "0 gold-labeled" in result.reason


def test_off_when_a_label_has_too_few_examples():
    train = _train(200)
    rare = train[train["label"] == "audio"].index[3:]
    result = train_fast_path(SPEC, train.drop(index=rare), lm_accuracy_estimate=0.7)
    assert result.fast_path is None and "audio" in result.reason


def test_threshold_rule_trades_coverage_against_the_lm():
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    fast_correct = np.array([True, True, True, True, False, True, False, False])
    # an LM right 75 % of the time: the top 6 (5 right, 0.83) beat it; the 7th drops the fast
    # path's accuracy to 0.71, under its floor
    threshold, figures = choose_threshold(confidence, fast_correct, np.full(8, 0.75))
    assert threshold == 0.6 and figures["oof_coverage"] == 0.75 and figures["oof_fast_accuracy"] == 0.8333
    # an LM right 95 % of the time: only the all-correct top 4 keep the cascade within the loss
    threshold, figures = choose_threshold(confidence, fast_correct, np.full(8, 0.95))
    assert threshold == 0.8 and figures["oof_fast_accuracy"] == 1.0
    # a fast path that is always wrong next to a perfect LM is never switched on
    assert choose_threshold(confidence, np.zeros(8, dtype=bool), np.ones(8))[0] is None


def test_trained_on_enough_data_it_answers_some_queries_and_reloads_exactly():
    train = _train(390)
    result = train_fast_path(SPEC, train, lm_accuracy_estimate=0.75)
    assert result.fast_path is not None, result.reason
    figures = result.fast_path.figures
    assert 0 < figures["oof_coverage"] <= 1 and figures["oof_estimated_cascade_loss"] <= MAX_CASCADE_LOSS
    restored = FastPath.from_state(json.loads(json.dumps(result.fast_path.to_state())))
    eval_rows = [SPEC.inputs(row) for row in load_queries("eval")]
    assert np.array_equal(restored.probabilities(eval_rows), result.fast_path.probabilities(eval_rows))
    answers, paths = cascade_answers(restored, eval_rows, ["text"] * len(eval_rows))
    assert "fast" in paths and "lm" in paths
    assert all(answer == "text" for answer, path in zip(answers, paths) if path == "lm")


def test_a_corrupt_state_is_refused():
    state = train_fast_path(SPEC, _train(390), lm_accuracy_estimate=0.75).fast_path.to_state()
    with pytest.raises(ValueError, match="coefficient rows"):
        FastPath.from_state({**state, "coef": state["coef"][:-1]})
    # coefficients that do not fit the stored features (a TF-IDF-only embedder under a model that
    # was trained with static vectors too)
    with pytest.raises(ValueError, match="coefficients per class"):
        FastPath.from_state({**state, "embedder": state["embedder"]["tfidf"]})
