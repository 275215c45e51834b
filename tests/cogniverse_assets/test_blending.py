import pandas as pd
import pytest

from cogniverse_assets import blending
from cogniverse_assets.blending import blend_plan, build_training_set
from cogniverse_resources.tenant import RoutingConfig

LABELS = ["video", "image", "audio", "document", "text"]


def _real(n, provenance="human", labels=LABELS, prefix="real", score=1.0):
    return pd.DataFrame(
        {
            "span_id": [f"{prefix}{i}" for i in range(n)],
            "query": [f"{prefix} query number {i}" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
            "provenance": provenance,
            "label_score": score,
        }
    )


def _synthetic(n):
    frame = _real(n, provenance="synthetic", prefix="synthetic", score=None)
    return frame.drop(columns="span_id")


@pytest.mark.parametrize(
    "real, use_synthetic, strategy",
    [
        (0, True, "synthetic_only"),
        (19, True, "synthetic_only"),
        (20, True, "hybrid"),
        (199, True, "hybrid"),
        (200, True, "pure_real"),
        (5, False, "pure_real"),
        (100, False, "pure_real"),
    ],
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
    result = build_training_set(
        pd.concat([real, duplicate], ignore_index=True), _synthetic(0), RoutingConfig(tenant_id="t")
    )
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
        router_label="video", success=True, satisfaction=5.0, processing_time_ms=20.0
    )
    bad = _real(100, provenance="router", labels=["video"], prefix="bad", score=0.8).assign(
        router_label="image", success=False, satisfaction=1.0, processing_time_ms=900.0
    )
    pool = pd.concat([bad, good], ignore_index=True)
    shares = [blending.replay_sample(pool, 50, seed=seed)["span_id"].str.startswith("good").mean() for seed in range(5)]
    assert sum(shares) / len(shares) > 0.65  # vs 0.5 without the reward


# ---------------------------------------------------------------- issue #13: decisions you can trust


def test_the_routers_own_answers_never_grade_when_annotations_are_scarce():
    real = pd.concat([_real(3), _real(120, provenance="router", prefix="router", score=0.9)], ignore_index=True)
    result = build_training_set(real, _synthetic(200), RoutingConfig(tenant_id="t"))
    assert result.plan.strategy == "hybrid"
    assert result.validation.empty
    assert result.validation_source == f"none (3 annotated < {blending.MIN_VALIDATION_EXAMPLES})"
    assert any("cannot be graded" in note for note in result.notes)


def test_cold_start_with_few_annotations_grades_on_synthetic_never_on_router_labels():
    real = pd.concat([_real(2), _real(10, provenance="router", prefix="router", score=0.9)], ignore_index=True)
    result = build_training_set(real, _synthetic(60), RoutingConfig(tenant_id="t"))
    assert result.validation_source.startswith("synthetic") and "2 annotated" in result.validation_source
    assert set(result.validation["provenance"]) == {"synthetic"}


def _relabel(frame, provenance, label, **extra):
    return frame.assign(provenance=provenance, label=label, span_id=frame["span_id"] + f"-{provenance}", **extra)


def test_a_later_router_label_never_replaces_an_annotation_of_the_same_query():
    human = _real(40)
    router_later = _relabel(human.iloc[:20], "router", "text")  # later rows, same queries, other label
    llm_later = _relabel(human.iloc[20:], "llm", "text").assign(query=lambda f: f["query"].str.upper())
    real = pd.concat([human, router_later, llm_later], ignore_index=True)
    result = build_training_set(real, _synthetic(0), RoutingConfig(tenant_id="t", use_synthetic_data=False))
    kept = pd.concat([result.train, result.validation], ignore_index=True)
    assert len(kept) == 40 and set(kept["provenance"]) == {"human"}
    assert dict(zip(kept["span_id"], kept["label"])) == dict(zip(human["span_id"], human["label"]))


def test_within_one_kind_the_newest_label_wins_by_start_time_else_row_order():
    base = _real(2, provenance="llm").assign(start_time=["2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00+00:00"])
    older = base.iloc[[0]].assign(label="text", span_id="older", start_time="2024-04-01T10:00:00+00:00")
    newer = base.iloc[[1]].assign(label="text", span_id="newer", start_time="2024-06-01T10:00:00+00:00")
    # the older relabel comes last in row order: start_time decides, not the row order
    frame = pd.concat([base, newer, older], ignore_index=True)
    frame = frame.assign(_key=frame["query"].map(blending.normalize_query))
    kept = blending.dedupe_by_precedence(frame).set_index("query")["span_id"].to_dict()
    assert kept == {"real query number 0": "real0", "real query number 1": "newer"}
    no_times = frame.drop(columns="start_time")
    kept = blending.dedupe_by_precedence(no_times).set_index("query")["span_id"].to_dict()
    assert kept == {"real query number 0": "older", "real query number 1": "newer"}  # the later row


def _keys(frame):
    return set(frame["query"].map(blending.normalize_query))


def test_a_query_stays_on_its_side_of_the_split_when_more_data_arrive():
    config = RoutingConfig(tenant_id="t")

    def mixed(n, offset):
        return pd.concat(
            [_real(n, prefix=f"h{offset}-"), _real(n, provenance="router", prefix=f"r{offset}-", score=0.9)],
            ignore_index=True,
        )

    first = build_training_set(mixed(60, 0), _synthetic(300), config)
    grown = pd.concat([mixed(60, 0), mixed(90, 1)], ignore_index=True)
    second = build_training_set(grown, _synthetic(300), config)
    real_train = lambda result: _keys(result.train[result.train["provenance"] != "synthetic"])  # noqa: E731
    assert real_train(first) and _keys(first.validation)
    assert real_train(first) <= real_train(second)  # nothing trained on moves to validation
    # below the cap, the hash's validation side stays validation (top-ups may return to training)
    hashed_in = {key for key in _keys(first.validation) if blending.split_hash(key) < blending.VALIDATION_FRACTION}
    assert hashed_in and hashed_in <= _keys(second.validation)
    assert _keys(second.validation).isdisjoint(real_train(second))
    # the side is a property of the query: the same with the rows in another order
    shuffled = build_training_set(grown.sample(frac=1.0, random_state=3), _synthetic(300), config)
    assert _keys(shuffled.validation) == _keys(second.validation)


def test_the_capped_split_drops_the_largest_hashes_and_never_pulls_training_queries_in():
    config = RoutingConfig(tenant_id="t")
    first = build_training_set(_real(900), _synthetic(0), config)
    second = build_training_set(_real(1150), _synthetic(0), config)
    for result, n in ((first, 900), (second, 1150)):  # both above the cap, below the replay buffer
        assert len(result.validation) == blending.MAX_VALIDATION_EXAMPLES
        hashes = {key: blending.split_hash(key) for key in _keys(_real(n))}
        in_validation = sorted(hashes[key] for key in _keys(result.validation))
        outside = [u for key, u in hashes.items() if key not in _keys(result.validation)]
        assert max(in_validation) < min(outside)  # the smallest hashes grade (all labels are common here)
        assert len(result.train) + len(result.validation) == n  # above the validation fraction: all trained on
    assert _keys(first.train).isdisjoint(_keys(second.validation))
    assert build_training_set(_real(1150), _synthetic(0), config).validation.equals(second.validation)


def test_every_label_keeps_a_validation_example_where_possible():
    common = _real(80, labels=["video", "image", "document", "text"])
    rare = _real(1, labels=["audio"], prefix="rare")
    real = pd.concat([common, rare], ignore_index=True)
    result = build_training_set(real, _synthetic(0), RoutingConfig(tenant_id="t"))
    assert set(result.validation["label"]) == set(LABELS)
    assert len(result.validation) >= blending.MIN_VALIDATION_EXAMPLES


def test_validation_is_topped_up_to_the_minimum_in_hash_order():
    real = pd.concat([_real(6), _real(60, provenance="router", prefix="router", score=0.9)], ignore_index=True)
    result = build_training_set(real, _synthetic(0), RoutingConfig(tenant_id="t", use_synthetic_data=False))
    assert result.validation_source == "real"
    assert len(result.validation) >= blending.MIN_VALIDATION_EXAMPLES
    assert set(result.validation["provenance"]) == {"human"}
