from cogniverse_assets.modules.registry import get_module
from cogniverse_assets.scoring import MIN_N_FOR_INTERVAL, paired_bootstrap_interval, promotion_decision, score_examples

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
    low, high = paired_bootstrap_interval(a, b, seed=1)
    assert low <= 0.25 <= high and (low, high) == paired_bootstrap_interval(a, b, seed=1)
