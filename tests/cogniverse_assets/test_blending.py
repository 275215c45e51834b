import pandas as pd
import pytest

from cogniverse_resources.tenant import RoutingConfig
from cogniverse_assets import blending
from cogniverse_assets.blending import blend_plan, build_training_set

LABELS = ["video", "image", "audio", "document", "text"]


def _real(n, provenance="human", labels=LABELS, prefix="real", score=1.0):
    return pd.DataFrame({
        "span_id": [f"{prefix}{i}" for i in range(n)],
        "query": [f"{prefix} query number {i}" for i in range(n)],
        "label": [labels[i % len(labels)] for i in range(n)],
        "provenance": provenance,
        "label_score": score,
    })


def _synthetic(n):
    frame = _real(n, provenance="synthetic", prefix="synthetic", score=None)
    return frame.drop(columns="span_id")


@pytest.mark.parametrize(
    "real, use_synthetic, strategy",
    [(0, True, "synthetic_only"), (19, True, "synthetic_only"), (20, True, "hybrid"), (199, True, "hybrid"),
     (200, True, "pure_real"), (5, False, "pure_real"), (100, False, "pure_real")],
)
def test_strategy_thresholds(real, use_synthetic, strategy):
    plan = blend_plan(real, RoutingConfig(tenant_id="t", use_synthetic_data=use_synthetic))
    assert plan.strategy == strategy
    assert (plan.synthetic_needed > 0) == (strategy != "pure_real")


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.75])
@pytest.mark.parametrize("real_count", [40, 120, 199])
def test_synthetic_ratio_is_the_exact_fraction_of_training_examples(ratio, real_count):
    config = RoutingConfig(tenant_id="t", synthetic_data_ratio=ratio)
    result = build_training_set(_real(real_count), _synthetic(1000), config)
    assert result.plan.strategy == "hybrid"
    train = result.train
    synthetic = int((train["provenance"] == "synthetic").sum())
    # Exact up to rounding to whole examples.
    assert abs(synthetic / len(train) - ratio) <= 1 / len(train)
    assert synthetic == blending.synthetic_count_for_ratio(len(train) - synthetic, ratio)


def test_validation_is_real_annotated_stratified_and_disjoint():
    real = pd.concat([_real(60), _real(40, provenance="router", prefix="router", score=0.8)], ignore_index=True)
    result = build_training_set(real, _synthetic(500), RoutingConfig(tenant_id="t"))
    validation = result.validation
    assert set(validation["provenance"]) <= {"human", "llm"}
    assert set(validation["label"]) == set(LABELS)
    assert result.validation_source == "real"
    assert set(validation["query"]).isdisjoint(set(result.train["query"]))


def test_duplicate_queries_never_span_both_splits():
    real = _real(80)
    duplicate = real.iloc[:40].assign(span_id=lambda f: f["span_id"] + "-again", query=lambda f: f["query"].str.upper())
    result = build_training_set(pd.concat([real, duplicate], ignore_index=True), _synthetic(0), RoutingConfig(tenant_id="t"))
    norm = lambda s: set(s.map(blending.normalize_query))  # noqa: E731
    assert norm(result.validation["query"]).isdisjoint(norm(result.train["query"]))
    assert len(norm(result.train["query"])) == len(result.train)


def test_split_is_seeded():
    config = RoutingConfig(tenant_id="t")
    first = build_training_set(_real(150), _synthetic(100), config, seed=1).validation["query"].tolist()
    again = build_training_set(_real(150), _synthetic(100), config, seed=1).validation["query"].tolist()
    other = build_training_set(_real(150), _synthetic(100), config, seed=2).validation["query"].tolist()
    assert first == again and first != other


def test_cold_start_trains_on_synthetic_and_grades_on_real():
    result = build_training_set(_real(10), _synthetic(60), RoutingConfig(tenant_id="t"))
    assert result.plan.strategy == "synthetic_only"
    assert set(result.train["provenance"]) == {"synthetic"}
    assert len(result.validation) == 10 and set(result.validation["provenance"]) == {"human"}


def test_cold_start_without_any_real_label_says_validation_is_synthetic():
    result = build_training_set(_real(0), _synthetic(60), RoutingConfig(tenant_id="t"))
    assert result.validation_source.startswith("synthetic")
    assert result.notes and set(result.validation["query"]).isdisjoint(result.train["query"])


def test_pure_real_ignores_synthetic():
    result = build_training_set(_real(400), _synthetic(100), RoutingConfig(tenant_id="t"))
    assert result.plan.strategy == "pure_real" and "synthetic" not in set(result.train["provenance"])


def test_experience_replay_prefers_confident_and_rare_examples():
    rare = _real(40, provenance="human", labels=["audio"], prefix="rare", score=1.0)
    common = _real(360, provenance="router", labels=["video"], prefix="common", score=0.6)
    pool = pd.concat([rare, common], ignore_index=True)  # the rare ones are the oldest
    kept = blending.replay_sample(pool, 60, seed=0)
    assert len(kept) == 60
    assert (kept["label"] == "audio").mean() > 0.3  # 10 % of the pool; 0 % of the newest 60
    assert blending.replay_sample(pool, 60, seed=0).equals(kept)


def test_training_set_applies_replay_when_real_data_exceed_the_buffer(monkeypatch):
    monkeypatch.setattr(blending, "REPLAY_BUFFER_SIZE", 60)
    result = build_training_set(_real(400), _synthetic(0), RoutingConfig(tenant_id="t"))
    assert len(result.train) == 60 and any("experience replay" in note for note in result.notes)


def test_experience_replay_weighs_the_shaped_reward_of_the_request():
    good = _real(100, provenance="router", labels=["video"], prefix="good", score=0.8).assign(
        router_label="video", success=True, satisfaction=5.0, processing_time_ms=20.0)
    bad = _real(100, provenance="router", labels=["video"], prefix="bad", score=0.8).assign(
        router_label="image", success=False, satisfaction=1.0, processing_time_ms=900.0)
    pool = pd.concat([bad, good], ignore_index=True)
    shares = [blending.replay_sample(pool, 50, seed=seed)["span_id"].str.startswith("good").mean() for seed in range(5)]
    assert sum(shares) / len(shares) > 0.65  # vs 0.5 without the reward
