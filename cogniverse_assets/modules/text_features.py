"""Local text features for routing queries; none needs a download at run time.

- ``TextEmbedder``: TF-IDF over word 1–2-grams and character 3–5-grams, fitted in milliseconds on
  a tenant's own examples. The retrieved-demos module finds nearest labeled examples with it.
- ``StaticWordVectors``: WordLlama's static token embeddings, averaged (256 dimensions). The
  weights and tokenizer ship inside the ``wordllama`` wheel, so they know words a tenant's few
  examples never used; loading them reads safetensors and a tokenizer JSON, never code.
- ``ClassifierFeatures``: both side by side, what the fast-path classifier learns from
  (``bench/fast_path_features.py`` chose it; docs/benchmarks.md "Fast-path features").

Fitted state is plain JSON: a stored module version restores it exactly, and loading it never
executes code.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

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

    @property
    def dimension(self) -> int:
        return sum(len(vectorizer.vocabulary_) for vectorizer in self.vectorizers.values())

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


STATIC_VECTORS_CONFIG = "l2_supercat"
STATIC_VECTORS_DIM = 256


class StaticWordVectors:
    """WordLlama's static embeddings from the installed wheel, identified by their weights' digest."""

    def __init__(self, model, name: str, sha256: str):
        self._model = model
        self.name = name
        self.sha256 = sha256

    @staticmethod
    @functools.cache
    def installed() -> "StaticWordVectors":
        """The wheel's vectors, loaded once per process."""
        import wordllama

        package = Path(wordllama.__file__).parent
        # WordLlama.load looks for the wheel's tokenizer in a folder the wheel does not have, then
        # downloads it; pointing its cache at the package finds it, and disable_download makes a
        # missing file an error instead of a network call.
        model = wordllama.WordLlama.load(
            config=STATIC_VECTORS_CONFIG, dim=STATIC_VECTORS_DIM, cache_dir=package, disable_download=True
        )
        weights = package / "weights" / f"{STATIC_VECTORS_CONFIG}_{STATIC_VECTORS_DIM}.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        return StaticWordVectors(model, f"wordllama/{STATIC_VECTORS_CONFIG}_{STATIC_VECTORS_DIM}", digest)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, STATIC_VECTORS_DIM), dtype=np.float32)
        return self._model.embed(list(texts), norm=True)

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}


class ClassifierFeatures:
    """The unit-length TF-IDF vector and the unit-length static vector, side by side."""

    def __init__(self, tfidf: TextEmbedder, static: StaticWordVectors | None):
        self.tfidf = tfidf
        self.static = static

    @classmethod
    def fit(cls, texts: Sequence[str]) -> "ClassifierFeatures":
        return cls(TextEmbedder.fit(texts), StaticWordVectors.installed())

    @property
    def dimension(self) -> int:
        return self.tfidf.dimension + (STATIC_VECTORS_DIM if self.static is not None else 0)

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        blocks = [self.tfidf.transform(texts)]
        if self.static is not None:
            blocks.append(sparse.csr_matrix(self.static.transform(texts)))
        return sparse.hstack(blocks).tocsr()

    def to_state(self) -> dict:
        return {
            "tfidf": self.tfidf.to_state(),
            "static_vectors": self.static.identity() if self.static is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "ClassifierFeatures":
        if "tfidf" not in state:  # stored before static vectors joined: TF-IDF alone
            return cls(TextEmbedder.from_state(state), None)
        static, stored = None, state.get("static_vectors")
        if stored:
            static = StaticWordVectors.installed()
            if stored.get("sha256") != static.sha256:
                raise ValueError(
                    f"stored fast path was trained on static vectors {stored.get('name')} "
                    f"(sha256 {str(stored.get('sha256'))[:12]}…), but this install has {static.name} "
                    f"(sha256 {static.sha256[:12]}…); retrain the lane to serve it"
                )
        return cls(TextEmbedder.from_state(state["tfidf"]), static)
