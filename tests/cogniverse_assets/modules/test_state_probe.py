"""The LM-state probe: standardized states into a logistic regression, chosen out of fold, stored as
plain JSON."""

import json

import numpy as np
import pytest

from cogniverse_assets.modules.state_probe import StateProbe, fit_with_chosen_regularization


def _states(signal: float, n: int = 150, width: int = 40, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Gaussian states on wildly different (but always the same) scales; ``signal`` moves one
    component per label."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, size=n)
    states = rng.normal(0, 1, size=(n, width))
    states[np.arange(n), gold] += signal
    scales = np.random.default_rng(99).uniform(0.01, 100, size=width)
    return states * scales, [("a", "b", "c")[i] for i in gold]


def test_the_probe_learns_states_that_carry_the_label_and_not_states_that_do_not():
    states, labels = _states(signal=3.0)
    probe, probabilities, classes, accuracy = fit_with_chosen_regularization(states, labels, seed=0)
    out_of_fold = float(np.mean(np.asarray(classes)[probabilities.argmax(axis=1)] == np.asarray(labels)))
    assert out_of_fold > 0.8 and accuracy[probe.regularization] == max(accuracy.values())
    fresh, fresh_labels = _states(signal=3.0, seed=1)
    predicted = np.asarray(probe.classes)[probe.probabilities(fresh).argmax(axis=1)]
    assert np.mean(predicted == np.asarray(fresh_labels)) > 0.8
    noise, noise_labels = _states(signal=0.0, seed=2)
    _, probabilities, classes, _ = fit_with_chosen_regularization(noise, noise_labels, seed=0)
    assert np.mean(np.asarray(classes)[probabilities.argmax(axis=1)] == np.asarray(noise_labels)) < 0.5


def test_a_stored_probe_gives_the_same_probabilities_and_refuses_an_inconsistent_state():
    states, labels = _states(signal=2.0)
    probe = StateProbe.fit(states, labels, regularization=0.1)
    restored = StateProbe.from_state(json.loads(json.dumps(probe.to_state())))
    np.testing.assert_array_equal(restored.probabilities(states), probe.probabilities(states))
    assert np.allclose(probe.probabilities(states).sum(axis=1), 1.0)
    broken = probe.to_state() | {"scale": probe.to_state()["scale"][:-1]}
    with pytest.raises(ValueError, match="inconsistent"):
        StateProbe.from_state(broken)
    with pytest.raises(ValueError, match="inconsistent"):
        StateProbe.from_state(probe.to_state() | {"classes": ["a", "b"]})
