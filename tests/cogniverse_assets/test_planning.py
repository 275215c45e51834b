"""Optimizer choice: the design's rules and the meta-model, on constructed histories."""

import math

import numpy as np
import pandas as pd
import pytest

from cogniverse_resources.tenant import RoutingConfig
from cogniverse_assets.planning import FEATURE_NAMES, MIN_HISTORY_FOR_META_MODEL, MetaModel, compute_features, rules_plan

CONFIG = RoutingConfig(tenant_id="t")


def _features(**overrides):
    features = {name: float("nan") for name in FEATURE_NAMES}
    features.update({"train_count": 100.0, "deployed_accuracy": 0.7, "real_count": 120.0})
    features.update({key: float(value) for key, value in overrides.items()})
    return features


@pytest.mark.parametrize(
    "overrides, decision, optimizer",
    [
        ({"train_count": 5}, "skip", None),
        ({"deployed_accuracy": 0.99}, "skip", None),
        ({"train_count": 30}, "train", "bootstrap"),
        ({"train_count": 49}, "train", "bootstrap"),
        ({"train_count": 50}, "train", "mipro"),
        ({"train_count": 200}, "train", "mipro"),
        ({"train_count": 201}, "train", "gepa"),
        ({"train_count": 100, "deployed_accuracy": 0.3}, "train", "simba"),
        ({"train_count": 20, "deployed_accuracy": 0.3}, "train", "bootstrap"),  # too small for SIMBA's batch
        ({"train_count": 100, "deployed_accuracy": float("nan")}, "train", "mipro"),
    ],
)
def test_rules(overrides, decision, optimizer):
    plan = rules_plan(_features(**overrides), CONFIG)
    assert (plan.decision, plan.optimizer, plan.source) == (decision, optimizer, "rules")
    assert plan.reasons


def test_preferred_optimizer_overrides_the_rules():
    plan = rules_plan(_features(train_count=300), RoutingConfig(tenant_id="t", preferred_optimizer="bootstrap"))
    assert (plan.optimizer, plan.source) == ("bootstrap", "preferred_optimizer")
    too_small = rules_plan(_features(train_count=10), RoutingConfig(tenant_id="t", preferred_optimizer="simba"))
    assert too_small.decision == "skip"


def _history(gains: dict[str, float], calls: dict[str, int], n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        optimizer = list(gains)[i % len(gains)]
        features = _features(train_count=rng.integers(40, 400), deployed_accuracy=rng.uniform(0.5, 0.9), label_entropy=rng.uniform(1, 2.3))
        rows.append({**features, "tenant_id": f"t{i % 5}", "module": "modality", "optimizer": optimizer,
                     "gain": gains[optimizer] + rng.normal(0, 0.003), "lm_calls": calls[optimizer]})
    return pd.DataFrame(rows)


def test_meta_model_picks_the_best_gain_per_cost():
    history = _history({"bootstrap": 0.02, "mipro": 0.03, "simba": 0.01, "gepa": 0.12}, {"bootstrap": 20, "mipro": 300, "simba": 400, "gepa": 250})
    plan = MetaModel.fit(history).plan(_features(), CONFIG)
    assert (plan.decision, plan.optimizer, plan.source) == ("train", "gepa", "meta_model")
    assert set(plan.predictions) == {"bootstrap", "mipro", "simba", "gepa"}


def test_meta_model_weighs_cost_when_gains_are_equal():
    history = _history({"bootstrap": 0.05, "mipro": 0.05, "simba": 0.05, "gepa": 0.05}, {"bootstrap": 10, "mipro": 2000, "simba": 2000, "gepa": 2000})
    assert MetaModel.fit(history).plan(_features(), CONFIG).optimizer == "bootstrap"


def test_meta_model_skips_when_nothing_helped():
    history = _history({"bootstrap": -0.02, "mipro": -0.01, "simba": -0.03, "gepa": -0.01}, {"bootstrap": 20, "mipro": 300, "simba": 400, "gepa": 250})
    plan = MetaModel.fit(history).plan(_features(), CONFIG)
    assert plan.decision == "skip" and "predicts" in plan.reasons[0]


def test_meta_model_round_trips_and_respects_hard_limits():
    history = _history({"bootstrap": 0.0, "mipro": 0.0, "simba": 0.2, "gepa": 0.0}, {"bootstrap": 20, "mipro": 300, "simba": 400, "gepa": 250})
    model = MetaModel.from_json(MetaModel.fit(history).to_json())
    assert model.plan(_features(), CONFIG).optimizer == "simba"
    assert "simba" not in model.plan(_features(train_count=20), CONFIG).predictions  # SIMBA's batch
    assert model.plan(_features(train_count=3), CONFIG).decision == "skip"
    assert set(model.feature_importance()) >= set(FEATURE_NAMES)
    assert MIN_HISTORY_FOR_META_MODEL <= len(history)


def test_features_use_recorded_router_answers_for_deployed_accuracy():
    traces = pd.DataFrame({
        "span_id": ["a", "b", "c", "d"], "router_label": ["video", "image", "audio", "text"],
        "label": ["video", "video", "audio", None], "provenance": ["human", "llm", "router", "unlabeled"],
        "confidence": [0.9, 0.8, 0.95, 0.2],
    })
    training_set = pd.DataFrame({
        "span_id": [None, "c", "a", "b"], "label": ["video", "audio", "video", "video"],
        "provenance": ["synthetic", "router", "human", "llm"], "split": ["train", "train", "validation", "validation"],
    })
    features = compute_features(traces, training_set, None, "t", "modality", None)
    assert features["deployed_accuracy"] == 0.5  # right on "a", wrong on "b"
    assert features["annotation_agreement"] == 0.5
    assert features["synthetic_count"] == 1 and features["train_count"] == 2
    assert math.isnan(features["hours_since_training"]) and math.isnan(features["mean_past_gain"])
