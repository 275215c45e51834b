import json
from collections import Counter
from pathlib import Path

import pytest

from cogniverse_assets.demo_data import load_catalog, load_queries
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_resources import trace_contract as tc

HOLDOUT = Path(__file__).resolve().parents[3] / "shared" / "holdout" / "external_routing_queries.jsonl"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_corpus_size_and_canonical_labels():
    rows = load_queries()
    assert len(rows) >= 400
    for spec in ROUTING_MODULES.values():
        counts = Counter(row[spec.corpus_label_key] for row in rows)
        assert set(counts) == set(spec.labels), spec.name
    for row in rows:
        assert (row["fusion_strategy"] == "none") == (not row["needs_fusion"])
        assert row["modality"] in row["detected_modalities"]


def test_splits_are_disjoint_and_cover_every_label():
    train, held_out = load_queries("train"), load_queries("eval")
    assert {_norm(r["query"]) for r in train}.isdisjoint({_norm(r["query"]) for r in held_out})
    for spec in ROUTING_MODULES.values():
        for split in (train, held_out):
            assert {r[spec.corpus_label_key] for r in split} == set(spec.labels)


def test_catalog_covers_every_modality():
    items = load_catalog()
    assert len(items) >= 150
    assert {item["modality"] for item in items} == set(tc.MODALITIES)
    assert all(item["title"] and item["description"] for item in items)


@pytest.mark.skipif(not HOLDOUT.exists(), reason="shared holdout set not present")
def test_no_holdout_query_leaked_into_the_corpus_or_catalog():
    """The external acceptance set is evaluation-only; read here solely to prove it is absent."""
    holdout = {_norm(json.loads(line)["query"]) for line in HOLDOUT.read_text().splitlines() if line.strip()}
    corpus = {_norm(row["query"]) for row in load_queries()}
    assert holdout.isdisjoint(corpus)
    catalog_text = " ".join(_norm(f"{i['title']} {i['description']} {i['transcript']}") for i in load_catalog())
    assert not [query for query in holdout if query in catalog_text]
