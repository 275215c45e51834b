"""Local text features: static vectors load from the wheel with no network; fitted state reloads exactly."""

import json
import socket

import numpy as np
import pytest

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules.text_features import ClassifierFeatures, StaticWordVectors

QUERIES = [row["query"] for row in load_queries("train")[:60]]


def test_static_vectors_load_from_the_wheel_with_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    StaticWordVectors.installed.cache_clear()
    vectors = StaticWordVectors.installed()
    podcast, interview, spreadsheet = vectors.transform(
        ["play me a podcast episode", "an audio recording of the interview", "a spreadsheet of quarterly revenue"]
    )
    assert np.allclose(np.linalg.norm([podcast, spreadsheet], axis=1), 1.0, atol=1e-5)
    # no word in common, yet the two audio requests are nearer each other than either is to the spreadsheet
    assert podcast @ interview > max(podcast @ spreadsheet, interview @ spreadsheet) + 0.05
    assert len(vectors.sha256) == 64 and vectors.name.startswith("wordllama/")


def test_classifier_features_reload_exactly_through_json():
    features = ClassifierFeatures.fit(QUERIES)
    restored = ClassifierFeatures.from_state(json.loads(json.dumps(features.to_state())))
    assert restored.dimension == features.dimension == features.transform(QUERIES[:3]).shape[1]
    assert np.array_equal(restored.transform(QUERIES).toarray(), features.transform(QUERIES).toarray())


def test_a_state_from_before_static_vectors_reloads_as_tfidf_alone():
    features = ClassifierFeatures.fit(QUERIES)
    restored = ClassifierFeatures.from_state(json.loads(json.dumps(features.tfidf.to_state())))
    assert restored.static is None and restored.dimension == features.tfidf.dimension
    assert np.array_equal(restored.transform(QUERIES).toarray(), features.tfidf.transform(QUERIES).toarray())


def test_other_static_vectors_are_refused_with_the_reason():
    state = ClassifierFeatures.fit(QUERIES).to_state()
    state["static_vectors"]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="retrain the lane"):
        ClassifierFeatures.from_state(state)
