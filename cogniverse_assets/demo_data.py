"""The bundled demo data: a labeled query corpus (train pool + fixed held-out split) and a content
catalog for synthetic generation. Written for this product; see tests/test_demo_data.py for the
properties it guarantees."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Literal

Split = Literal["train", "eval"]


def _read_jsonl(name: str) -> list[dict]:
    text = resources.files("cogniverse_assets").joinpath("data", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=None)
def _queries() -> tuple[dict, ...]:
    return tuple(_read_jsonl("queries.jsonl"))


def load_queries(split: Split | None = None) -> list[dict]:
    """Corpus rows (copies), optionally one split only. ``eval`` is never used for training or traffic."""
    return [dict(row) for row in _queries() if split is None or row["split"] == split]


def load_catalog() -> list[dict]:
    """The bundled content catalog (the embedded content backend's data)."""
    from cogniverse_resources.content import bundled_catalog

    return [dict(item) for item in bundled_catalog()]
