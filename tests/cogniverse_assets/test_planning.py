"""Optimizer choice: the design's rules and the meta-model, on constructed histories."""

import math

import numpy as np
import pandas as pd
import pytest

from cogniverse_assets.modules.calibrated import can_calibrate
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.planning import (
    CALIBRATED_PRIOR_GAIN,
    FEATURE_NAMES,
    MIN_HISTORY_FOR_META_MODEL,
    LaneContext,
    MetaModel,
    compute_features,
    expected_lm_calls,
    rules_plan,
)
from cogniverse_resources.tenant import RoutingConfig

CONFIG = RoutingConfig(tenant_id="t")


def _features(**overrides):
    features = {name: float("nan") for name in FEATURE_NAMES}
    features.update({"train_count": 100.0, "deployed_accuracy": 0.7, "real_count": 120.0})
    features.update({key: float(value) for key, value in overrides.items()})
    return features


# A budget that every optimizer fits, for tests about the choice itself.
UNLIMITED = RoutingConfig(tenant_id="t", max_optimization_lm_calls=1_000_000, max_optimization_seconds=7 * 24 * 3600)
# The default plan within the default budget: the best measured gain per cost that fits it.
DEFAULT_CHOICE = "bootstrap"


@pytest.mark.parametrize(
    "overrides, decision, optimizer",
    [
        ({"train_count": 5}, "skip", None),
        ({"deployed_accuracy": 0.99}, "skip", None),
        ({"train_count": 30}, "train", DEFAULT_CHOICE),
        ({"train_count": 130}, "train", DEFAULT_CHOICE),
        ({"train_count": 1000, "deployed_accuracy": 0.3}, "train", DEFAULT_CHOICE),
        ({"train_count": 100, "deployed_accuracy": float("nan")}, "train", DEFAULT_CHOICE),
    ],
)
def test_rules_within_the_default_budget(overrides, decision, optimizer):
    plan = rules_plan(_features(**overrides), CONFIG)
    assert (plan.decision, plan.optimizer, plan.source) == (decision, optimizer, "rules")
    assert plan.reasons
    if decision == "train":
        weighed = plan.predictions
        assert set(weighed) >= {"knn", "labeled", "bootstrap", "mipro", "gepa"}
        assert (
            weighed[optimizer]["within_budget"] and weighed[optimizer]["lm_calls"] <= CONFIG.max_optimization_lm_calls
        )
        assert not weighed["mipro"]["within_budget"] and "mipro" in plan.reasons[-1]  # listed as over budget


def test_every_optimizer_the_rules_choose_fits_both_budgets():
    for calls in (0, 10, 50, 400, 5000):
        for seconds in (1, 30, 120, 1000, 100_000):
            config = RoutingConfig(tenant_id="t", max_optimization_lm_calls=calls, max_optimization_seconds=seconds)
            for n in (20, 130, 600):
                plan = rules_plan(_features(train_count=n), config)
                if plan.decision == "train":
                    chosen = plan.predictions[plan.optimizer]
                    assert chosen["lm_calls"] <= calls and chosen["seconds"] <= seconds
                    assert expected_lm_calls(plan.optimizer, n, config.max_training_iterations) <= calls
                else:
                    assert not any(figures["within_budget"] for figures in plan.predictions.values())


def test_nothing_fits_a_budget_of_one_second():
    plan = rules_plan(_features(), RoutingConfig(tenant_id="t", max_optimization_seconds=1))
    assert plan.decision == "skip" and "expected to fit" in plan.reasons[0]


def test_preferred_optimizer_overrides_the_choice_but_not_the_budget():
    plan = rules_plan(_features(train_count=300), RoutingConfig(tenant_id="t", preferred_optimizer="bootstrap"))
    assert (plan.optimizer, plan.source) == ("bootstrap", "preferred_optimizer")
    too_small = rules_plan(_features(train_count=10), RoutingConfig(tenant_id="t", preferred_optimizer="simba"))
    assert too_small.decision == "skip"
    over = rules_plan(_features(train_count=130), RoutingConfig(tenant_id="t", preferred_optimizer="mipro"))
    assert (
        over.decision == "skip"
        and "over the budget" in over.reasons[0]
        and "max_optimization_lm_calls" in over.reasons[0]
    )
    allowed = rules_plan(
        _features(train_count=130),
        RoutingConfig(
            tenant_id="t", preferred_optimizer="mipro", max_optimization_lm_calls=500, max_optimization_seconds=3600
        ),
    )
    assert (allowed.decision, allowed.optimizer) == ("train", "mipro")


def test_calibrated_is_weighed_per_module_with_its_measured_gain():
    routing = rules_plan(_features(train_count=130), CONFIG, LaneContext("routing"))
    assert (routing.decision, routing.optimizer) == ("train", "calibrated")
    assert routing.predictions["calibrated"]["lm_calls"] == 50 and routing.predictions["calibrated"]["within_budget"]
    small = rules_plan(_features(train_count=20), CONFIG, LaneContext("routing"))
    assert small.optimizer == "calibrated" and small.predictions["calibrated"]["lm_calls"] == 20
    assert "calibrated" not in rules_plan(_features(train_count=9), CONFIG, LaneContext("routing")).predictions
    # modality: its holdout gain is below zero, so the default stays; cross_modal cannot be
    # calibrated, and neither can any module when the student is not the local model
    assert rules_plan(_features(train_count=130), CONFIG, LaneContext("modality")).optimizer == DEFAULT_CHOICE
    for lane in (LaneContext("cross_modal"), LaneContext(), LaneContext("routing", local_student=False)):
        assert "calibrated" not in rules_plan(_features(train_count=130), CONFIG, lane).predictions
    preferred = RoutingConfig(tenant_id="t", preferred_optimizer="calibrated")
    refused = rules_plan(_features(train_count=130), preferred, LaneContext("cross_modal"))
    assert refused.decision == "skip" and "needs one of the modules" in refused.reasons[0]
    assert rules_plan(_features(train_count=130), preferred, LaneContext("modality")).optimizer == "calibrated"
    tight = RoutingConfig(tenant_id="t", max_optimization_lm_calls=30)
    assert rules_plan(_features(train_count=130), tight, LaneContext("routing")).optimizer != "calibrated"


def test_the_lm_state_probe_is_chosen_only_where_measured_and_when_the_budget_pays_for_its_passes():
    default = rules_plan(_features(train_count=130), CONFIG, LaneContext("routing"))
    weighed = default.predictions["calibrated_state"]
    assert weighed["lm_calls"] == 130 and not weighed["within_budget"] and default.optimizer == "calibrated"
    roomy = RoutingConfig(tenant_id="t", max_optimization_lm_calls=150)
    assert rules_plan(_features(train_count=130), roomy, LaneContext("routing")).optimizer == "calibrated_state"
    # modality was rejected by its rule; below the probe's data floor it is not weighed at all
    assert "calibrated_state" not in rules_plan(_features(train_count=130), roomy, LaneContext("modality")).predictions
    assert "calibrated_state" not in rules_plan(_features(train_count=40), roomy, LaneContext("routing")).predictions
    preferred = RoutingConfig(tenant_id="t", preferred_optimizer="calibrated_state")
    over = rules_plan(_features(train_count=130), preferred, LaneContext("routing"))
    assert over.decision == "skip" and "raise max_optimization_lm_calls" in over.reasons[0]


def _history(gains: dict[str, float], calls: dict[str, int], n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        optimizer = list(gains)[i % len(gains)]
        features = _features(
            train_count=rng.integers(40, 400),
            deployed_accuracy=rng.uniform(0.5, 0.9),
            label_entropy=rng.uniform(1, 2.3),
        )
        rows.append(
            {
                **features,
                "tenant_id": f"t{i % 5}",
                "module": "modality",
                "optimizer": optimizer,
                "gain": gains[optimizer] + rng.normal(0, 0.003),
                "lm_calls": calls[optimizer],
            }
        )
    return pd.DataFrame(rows)


def test_meta_model_picks_the_best_gain_per_cost():
    history = _history(
        {"bootstrap": 0.02, "mipro": 0.03, "simba": 0.01, "gepa": 0.12},
        {"bootstrap": 20, "mipro": 300, "simba": 400, "gepa": 250},
    )
    plan = MetaModel.fit(history).plan(_features(), UNLIMITED)
    assert (plan.decision, plan.optimizer, plan.source) == ("train", "gepa", "meta_model")
    assert set(plan.predictions) == {"bootstrap", "mipro", "simba", "gepa"}  # only optimizers it has outcomes of
    # the same model within the default budget of 50 LM calls: GEPA's ~250 calls rule it out
    cheap = MetaModel.fit(history).plan(_features(), CONFIG)
    assert (cheap.decision, cheap.optimizer) == ("train", "bootstrap") and not cheap.predictions["gepa"][
        "within_budget"
    ]


def test_meta_model_weighs_cost_when_gains_are_equal():
    history = _history(
        {"bootstrap": 0.05, "mipro": 0.05, "simba": 0.05, "gepa": 0.05},
        {"bootstrap": 10, "mipro": 2000, "simba": 2000, "gepa": 2000},
    )
    assert MetaModel.fit(history).plan(_features(), UNLIMITED).optimizer == "bootstrap"


def test_meta_model_skips_when_nothing_helped():
    history = _history(
        {"bootstrap": -0.02, "mipro": -0.01, "simba": -0.03, "gepa": -0.01},
        {"bootstrap": 20, "mipro": 300, "simba": 400, "gepa": 250},
    )
    plan = MetaModel.fit(history).plan(_features(), UNLIMITED)
    assert plan.decision == "skip" and "expected gain" in plan.reasons[0]


def test_meta_model_round_trips_and_respects_hard_limits():
    history = _history(
        {"bootstrap": 0.0, "mipro": 0.0, "simba": 0.2, "gepa": 0.0},
        {"bootstrap": 20, "mipro": 300, "simba": 400, "gepa": 250},
    )
    model = MetaModel.from_json(MetaModel.fit(history).to_json())
    assert model.plan(_features(), UNLIMITED).optimizer == "simba"
    assert "simba" not in model.plan(_features(train_count=20), UNLIMITED).predictions  # SIMBA's batch
    assert model.plan(_features(train_count=3), UNLIMITED).decision == "skip"
    assert set(model.feature_importance()) >= set(FEATURE_NAMES)
    assert MIN_HISTORY_FOR_META_MODEL <= len(history)


def test_features_use_recorded_router_answers_for_deployed_accuracy():
    traces = pd.DataFrame(
        {
            "span_id": ["a", "b", "c", "d"],
            "router_label": ["video", "image", "audio", "text"],
            "label": ["video", "video", "audio", None],
            "provenance": ["human", "llm", "router", "unlabeled"],
            "confidence": [0.9, 0.8, 0.95, 0.2],
        }
    )
    training_set = pd.DataFrame(
        {
            "span_id": [None, "c", "a", "b"],
            "label": ["video", "audio", "video", "video"],
            "provenance": ["synthetic", "router", "human", "llm"],
            "split": ["train", "train", "validation", "validation"],
        }
    )
    features = compute_features(traces, training_set, None, "t", "modality", None)
    assert features["deployed_accuracy"] == 0.5  # right on "a", wrong on "b"
    assert features["annotation_agreement"] == 0.5
    assert features["synthetic_count"] == 1 and features["train_count"] == 2
    assert math.isnan(features["hours_since_training"]) and math.isnan(features["mean_past_gain"])


def test_too_few_annotated_validation_examples_skip_whatever_decides():
    reason = "3 annotated validation examples < 5: cannot grade a candidate"
    assert rules_plan(_features(validation_count=3), CONFIG).reasons == [reason]
    preferred = RoutingConfig(tenant_id="t", preferred_optimizer="bootstrap")
    assert rules_plan(_features(validation_count=3), preferred).decision == "skip"
    history = _history(
        {"bootstrap": 0.05, "mipro": 0.05, "simba": 0.05, "gepa": 0.05},
        {"bootstrap": 10, "mipro": 300, "simba": 400, "gepa": 250},
    )
    plan = MetaModel.fit(history).plan(_features(validation_count=0), UNLIMITED)
    assert plan.decision == "skip" and "0 annotated validation examples" in plan.reasons[0]
    assert rules_plan(_features(validation_count=5), CONFIG).decision == "train"


def test_the_planner_weighs_each_calibrated_optimizer_for_exactly_the_modules_the_registry_compiles_it_for():
    """Priors are keyed by module and the registry says what compiles; the two must not drift apart."""
    compiles = {
        "calibrated": {spec.name for spec in ROUTING_MODULES.values() if can_calibrate(spec)},
        "calibrated_state": {spec.name for spec in ROUTING_MODULES.values() if spec.calibration_reads_state},
    }
    assert {optimizer: set(gains) for optimizer, gains in CALIBRATED_PRIOR_GAIN.items()} == compiles
