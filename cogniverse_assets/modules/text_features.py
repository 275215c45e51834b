"""A local text embedder for routing queries: TF-IDF over word 1–2-grams and character 3–5-grams.

It needs no download at run time and fits in milliseconds on a tenant's own examples, so both the
retrieved-demos module (nearest labeled examples) and the fast-path classifier use it. Its fitted
state (vocabularies and idf weights) is plain JSON: a stored module version restores it exactly,
and loading it never executes code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

# Both analyzers, with the parameters a stored state is restored with.
ANALYZERS = {
    "word": {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True, "norm": "l2"},
    "char": {"analyzer": "char_wb", "ngram_range": (3, 5), "sublinear_tf": True, "lowercase": True, "norm": "l2"},
}
MAX_FEATURES = 20_000  # per analyzer; keeps a stored module version small


def feature_text(inputs: Mapping[str, object]) -> str:
    """One string per example: the query, then any list inputs (entities, detected modalities) as
    ``field=value`` tokens, so they count as evidence without being mistaken for query words."""
    parts = [str(inputs.get("query", ""))]
    for field, value in inputs.items():
        if field != "query" and isinstance(value, (list, tuple)):
            parts.extend(f"{field}={item}".replace(" ", "_") for item in value)
    return " ".join(parts)


class TextEmbedder:
    """L2-normalized concatenation of the word and character TF-IDF vectors."""

    def __init__(self, vectorizers: dict[str, TfidfVectorizer]):
        self.vectorizers = vectorizers

    @classmethod
    def fit(cls, texts: Sequence[str]) -> "TextEmbedder":
        vectorizers = {}
        for name, params in ANALYZERS.items():
            vectorizers[name] = TfidfVectorizer(max_features=MAX_FEATURES, **params).fit(list(texts))
        return cls(vectorizers)

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        blocks = [vectorizer.transform(list(texts)) for vectorizer in self.vectorizers.values()]
        stacked = sparse.hstack(blocks).tocsr()
        norms = np.sqrt(stacked.multiply(stacked).sum(axis=1)).A.ravel()
        norms[norms == 0] = 1.0
        return sparse.diags(1.0 / norms) @ stacked

    def to_state(self) -> dict:
        return {
            name: {
                "vocabulary": {term: int(index) for term, index in vectorizer.vocabulary_.items()},
                "idf": [float(value) for value in vectorizer.idf_],
            }
            for name, vectorizer in self.vectorizers.items()
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Mapping]) -> "TextEmbedder":
        vectorizers = {}
        for name, params in ANALYZERS.items():
            fitted = state[name]
            vectorizer = TfidfVectorizer(**params)
            vectorizer.vocabulary_ = dict(fitted["vocabulary"])
            vectorizer.idf_ = np.asarray(fitted["idf"], dtype=float)
            if len(vectorizer.idf_) != len(vectorizer.vocabulary_):
                raise ValueError(f"stored {name} embedder state is inconsistent: vocabulary and idf sizes differ")
            vectorizers[name] = vectorizer
        return cls(vectorizers)
