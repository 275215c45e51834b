"""The label classifier's out-of-fold probabilities (no LM)."""

import numpy as np

from cogniverse_assets.demo_data import load_queries
from cogniverse_assets.modules import label_classifier
from cogniverse_assets.modules.label_classifier import FOLDS, LabelClassifier, out_of_fold_probabilities


def test_the_same_rows_and_seed_are_fitted_once_per_process(monkeypatch):
    """A routing lane asks for them twice (calibrated's vote, the fast path's threshold)."""
    rows = load_queries("train")[:80]
    texts, labels = [row["query"] for row in rows], np.array([row["modality"] for row in rows])
    fits = []
    fit = LabelClassifier.fit.__func__
    monkeypatch.setattr(LabelClassifier, "fit", classmethod(lambda cls, *args: fits.append(1) or fit(cls, *args)))
    label_classifier._out_of_fold_probabilities.cache_clear()

    first, classes = out_of_fold_probabilities(texts, labels, seed=0)
    first[:] = 0  # a caller's changes stay its own
    again, classes_again = out_of_fold_probabilities(list(texts), labels.tolist(), seed=0)

    assert len(fits) == FOLDS and classes_again == classes
    np.testing.assert_allclose(again.sum(axis=1), 1.0)
    out_of_fold_probabilities(texts, labels, seed=1)  # other folds: fitted again
    assert len(fits) == 2 * FOLDS
