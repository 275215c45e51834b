import dspy
import pytest

from cogniverse_assets.modules.metrics import exact_match, feedback_metric, shaped_reward
from cogniverse_assets.modules.registry import get_module


def test_shaped_reward_extremes_and_components():
    assert shaped_reward(success=True, correct=True, satisfaction=5, latency_ms=10) == 1.0
    assert shaped_reward(success=False, correct=False, satisfaction=1, latency_ms=5000) == 0.0
    assert shaped_reward(success=None, correct=False) == pytest.approx(5 / 25)
    assert shaped_reward(success=True, correct=False) == pytest.approx(15 / 25)
    assert shaped_reward(success=True, correct=True) > shaped_reward(success=True, correct=False)
    assert shaped_reward(success=True, correct=True, latency_ms=50) - shaped_reward(
        success=True, correct=True
    ) == pytest.approx(2 / 25)


def test_exact_match_and_feedback():
    spec = get_module("routing")
    gold = dspy.Example(query="recap the keynote", entities=[], agent="summarizer_agent").with_inputs(
        "query", "entities"
    )
    assert exact_match(spec)(gold, dspy.Prediction(agent="summarizer_agent"))
    assert not exact_match(spec)(gold, dspy.Prediction(agent="video_search_agent"))
    wrong = feedback_metric(spec)(gold, dspy.Prediction(agent="video_search_agent"), None, "self", None)
    assert wrong.score == 0.0 and "summarizer_agent" in wrong.feedback and "video_search_agent" in wrong.feedback
    assert feedback_metric(spec)(gold, dspy.Prediction(agent="summarizer_agent")).score == 1.0
