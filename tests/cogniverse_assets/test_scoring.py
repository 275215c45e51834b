from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.scoring import MIN_N_FOR_INTERVAL, paired_comparison, promotion_decision, score_examples

SPEC = get_module("modality")


def _scores(gold, predicted):
    return score_examples(SPEC, gold, predicted, [1.0] * len(gold), lm_calls=len(gold))


GOLD = ["video", "image", "audio", "document", "text"] * 8  # 40 examples


def _with_errors(wrong_at, answer="text"):
    return [answer if i in wrong_at else label for i, label in enumerate(GOLD)]


def test_scores():
    scores = _scores(["video", "video", "image", "audio"], ["video", "image", "image", "video"])
    assert scores.accuracy == 0.5 and scores.n == 4
    assert scores.per_class["video"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert scores.confusion["video"]["image"] == 1 and scores.confusion["audio"]["video"] == 1
    assert 0 < scores.macro_f1 < 1


def test_a_clearly_better_candidate_is_promoted():
    deployed = _scores(GOLD, _with_errors(set(range(0, 40, 3))))  # 14 wrong
    candidate = _scores(GOLD, _with_errors({0, 9}))
    promote, reasons, figures = promotion_decision(candidate, deployed)
    assert promote, reasons
    assert figures["interval"][0] > 0 and len(GOLD) >= MIN_N_FOR_INTERVAL


def test_a_worse_candidate_is_never_promoted():
    deployed = _scores(GOLD, _with_errors({0, 9}))
    candidate = _scores(GOLD, _with_errors(set(range(0, 40, 3))))
    promote, reasons, _ = promotion_decision(candidate, deployed)
    assert not promote and "gain" in reasons[0]


def test_a_tiny_gain_inside_the_noise_is_not_promoted():
    deployed = _scores(GOLD, _with_errors({0, 5, 10, 15, 20}))
    candidate = _scores(GOLD, _with_errors({0, 5, 10, 15}))
    promote, reasons, figures = promotion_decision(candidate, deployed)
    assert not promote and figures["interval"][0] <= 0


def test_collapsing_one_class_blocks_promotion():
    deployed = _scores(GOLD, _with_errors({1, 2, 3, 4, 6, 7, 8, 9, 11, 12}, answer="video"))
    wrong_audio = {i for i, label in enumerate(GOLD) if label == "audio"}
    candidate = _scores(GOLD, _with_errors(wrong_audio, answer="text"))
    promote, reasons, figures = promotion_decision(candidate, deployed, min_gain=0.0)
    assert not promote and "audio" in figures["class_recall_drops"]


def test_bootstrap_interval_is_seeded_and_ordered():
    a, b = [True] * 30 + [False] * 10, [True] * 20 + [False] * 20
    first = paired_comparison(a, b, seed=1)
    assert first.low <= 0.25 <= first.high and first == paired_comparison(a, b, seed=1)


def test_mcnemar_counts_only_discordant_pairs():
    # 10 examples only the candidate gets right, none the other way: p = 2 * 0.5**10
    comparison = paired_comparison([True] * 10 + [True] * 5 + [False] * 5, [False] * 10 + [True] * 5 + [False] * 5)
    assert (comparison.wins, comparison.losses) == (10, 0)
    assert abs(comparison.mcnemar_p - 2 * 0.5**10) < 1e-12
    balanced = paired_comparison([True, False] * 10, [False, True] * 10)
    assert balanced.mcnemar_p == 1.0 and balanced.gain == 0.0
    wider = paired_comparison([True] * 30 + [False] * 10, [True] * 20 + [False] * 20, level=0.95)
    assert wider.high - wider.low > first_width(0.90)


def first_width(level: float) -> float:
    narrow = paired_comparison([True] * 30 + [False] * 10, [True] * 20 + [False] * 20, level=level)
    return narrow.high - narrow.low


def test_a_candidate_graded_on_synthetic_validation_is_never_promoted():
    deployed = _scores(GOLD, _with_errors(set(range(0, 40, 3))))
    candidate = _scores(GOLD, _with_errors({0, 9}))
    assert promotion_decision(candidate, deployed, validation_source="real")[0]  # the same figures on real data
    for source in ("synthetic (0 annotated < 5)", "none (3 annotated < 5)", "unknown"):
        promote, reasons, figures = promotion_decision(candidate, deployed, validation_source=source)
        assert not promote
        assert any(source in reason and "never promoted automatically" in reason for reason in reasons)
        assert figures["validation_source"] == source and figures["interval"][0] > 0  # still reported
