"""Demos from a tenant's own labeled examples, chosen without LM calls — what lifts a small LM.

- ``RetrievedDemos`` (optimizer ``knn``): per query, the ``k`` most similar labeled examples of a
  demo pool go into the prompt, class-balanced (at most ``ceil(k / labels)`` of one label while
  others are available) and ordered most similar last, next to the query. The pool and the
  embedder's fitted state are saved in the module's JSON state, so a reloaded module picks the
  same demos in the same order and answers as the compiled one did. Stock ``dspy.KNNFewShot``
  re-bootstraps on every call (LM calls), shuffles the neighbours and is not saved by
  ``dump_state``; this passes per-call ``demos`` to one ``Predict`` instead.
- ``class_medoid_demos`` (optimizer ``labeled``): a fixed, class-balanced set — for each label the
  examples nearest its centroid. A fixed prompt prefix that llama.cpp reuses between calls, so
  serving costs about what the unoptimized module costs.

Only gold labels become demos (human and LLM annotations, synthetic examples with their intended
label); the router's own answers never do, so a module is not taught its own mistakes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import dspy
import numpy as np
import pandas as pd

from cogniverse_assets.modules.text_features import TextEmbedder, feature_text

if TYPE_CHECKING:  # the registry loads these programs, so it cannot be imported here at run time
    from cogniverse_assets.modules.registry import RoutingModuleSpec

GOLD_PROVENANCES = ("human", "llm", "synthetic")
DEFAULT_K = 4
DEFAULT_DEMOS_PER_LABEL = 1


def gold_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose label is gold (rows without provenance, such as the corpus, count as gold)."""
    return frame[frame["provenance"].isin(GOLD_PROVENANCES)] if "provenance" in frame else frame


def gold_rows(spec: RoutingModuleSpec, frame: pd.DataFrame) -> list[dict]:
    """Training rows with a gold label as ``{"inputs", "label", "provenance", "source_id"}`` records."""
    rows = []
    for row in gold_frame(frame).to_dict("records"):
        plain = {key: _plain(value) for key, value in row.items()}
        source = plain.get("span_id")
        rows.append(
            {
                "inputs": spec.inputs(plain),
                "label": str(plain["label"]),
                "provenance": str(plain.get("provenance") or "corpus"),
                "source_id": None
                if source is None or (isinstance(source, float) and math.isnan(source))
                else str(source),
            }
        )
    return rows


def _plain(value: object) -> object:
    # Parquet round-trips lists as numpy arrays.
    return list(value) if hasattr(value, "tolist") and not isinstance(value, str) else value


def to_demo(spec: RoutingModuleSpec, row: Mapping) -> dspy.Example:
    return dspy.Example(**row["inputs"], **spec.outputs_for(row["label"])).with_inputs(*row["inputs"])


def balanced_nearest(similarities: np.ndarray, labels: Sequence[str], k: int) -> list[int]:
    """Indices of the ``k`` most similar rows, at most ``ceil(k / distinct labels)`` per label while
    other labels still have rows; returned least similar first (the most similar ends up last,
    next to the query). Ties keep pool order, so the choice is deterministic."""
    order = np.argsort(-similarities, kind="stable")
    cap = math.ceil(k / max(1, len(set(labels))))
    taken: dict[str, int] = defaultdict(int)
    chosen, skipped = [], []
    for index in order:
        if len(chosen) == k:
            break
        if taken[labels[index]] < cap:
            chosen.append(int(index))
            taken[labels[index]] += 1
        else:
            skipped.append(int(index))
    chosen.extend(skipped[: k - len(chosen)])  # fewer labels than the cap assumed: fill by similarity
    return sorted(chosen, key=lambda index: (similarities[index], -index))


class RetrievedDemos(dspy.Module):
    """One ``Predict`` whose demos are the query's nearest labeled examples (see module docstring)."""

    def __init__(self, spec: RoutingModuleSpec, pool: list[dict], embedder: TextEmbedder, k: int = DEFAULT_K):
        super().__init__()
        self.spec = spec
        self.predict = spec.program()
        self.pool = pool
        self.k = k
        self.embedder = embedder
        self._labels = [row["label"] for row in pool]
        self._matrix = embedder.transform([feature_text(row["inputs"]) for row in pool]) if pool else None

    @classmethod
    def compile(cls, spec: RoutingModuleSpec, train: pd.DataFrame, k: int = DEFAULT_K) -> "RetrievedDemos":
        pool = gold_rows(spec, train)
        if not pool:
            raise ValueError(f"no gold-labeled training examples for {spec.name}: nothing to retrieve")
        return cls(spec, pool, TextEmbedder.fit([feature_text(row["inputs"]) for row in pool]), k)

    def neighbours(self, inputs: Mapping[str, object], exclude_query: bool = False) -> list[dict]:
        """The pool rows that become demos for ``inputs``, in prompt order."""
        if self._matrix is None:
            return []
        similarities = (self._matrix @ self.embedder.transform([feature_text(inputs)]).T).toarray().ravel()
        if exclude_query:  # leave-one-out estimates must not see the example itself
            query = _normalized(inputs.get("query"))
            similarities = np.where(
                [_normalized(row["inputs"].get("query")) == query for row in self.pool], -1.0, similarities
            )
        picked = [i for i in balanced_nearest(similarities, self._labels, self.k) if similarities[i] >= 0]
        return [self.pool[i] for i in picked]

    def forward(self, **inputs):
        demos = [to_demo(self.spec, row) for row in self.neighbours(inputs)]
        return self.predict(**inputs, demos=demos)

    def dump_state(self, json_mode: bool = True) -> dict:
        state = super().dump_state(json_mode=json_mode)
        state["retrieval"] = {"k": self.k, "pool": self.pool, "embedder": self.embedder.to_state()}
        return state

    @classmethod
    def from_state(cls, spec: RoutingModuleSpec, state: Mapping) -> "RetrievedDemos":
        retrieval = state["retrieval"]
        program = cls(
            spec, list(retrieval["pool"]), TextEmbedder.from_state(retrieval["embedder"]), int(retrieval["k"])
        )
        program.predict.load_state(state["predict"])
        return program


def _normalized(query: object) -> str:
    return " ".join(str(query).lower().split())


def class_medoid_demos(
    spec: RoutingModuleSpec, train: pd.DataFrame, per_label: int = DEFAULT_DEMOS_PER_LABEL
) -> list[dspy.Example]:
    """For each label, the ``per_label`` gold examples nearest the label's TF-IDF centroid; labels
    interleaved in a fixed order so that no label's block sits last, next to the query."""
    pool = gold_rows(spec, train)
    if not pool:
        raise ValueError(f"no gold-labeled training examples for {spec.name}: no demos to choose")
    embedder = TextEmbedder.fit([feature_text(row["inputs"]) for row in pool])
    matrix = embedder.transform([feature_text(row["inputs"]) for row in pool])
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(pool):
        by_label[row["label"]].append(index)
    ranked = {}
    for label, indices in by_label.items():
        rows = matrix[indices]
        centroid = np.asarray(rows.mean(axis=0)).ravel()
        scores = rows @ centroid
        ranked[label] = [indices[i] for i in np.argsort(-scores, kind="stable")[:per_label]]
    ordered = [
        ranked[label][rank]
        for rank in range(per_label)
        for label in spec.labels
        if label in ranked and rank < len(ranked[label])
    ]
    return [to_demo(spec, pool[index]) for index in ordered]
