"""The tenant's searchable content, sampled to seed synthetic training queries.

Two backends: the bundled catalog (embedded default, no services needed) and Vespa in production
(``VESPA_URL``), queried through pyvespa with a random-ranking profile so each call sees a
different slice of the corpus.
"""

from __future__ import annotations

import json
import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Mapping
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field
from vespa.application import Vespa
from vespa.exceptions import VespaError

from cogniverse_resources import settings
from cogniverse_resources.trace_contract import MODALITIES

DEFAULT_FIELD_MAP: dict[str, str] = {
    "id": "id",
    "title": "title",
    "description": "description",
    "transcript": "transcript",
    "modality": "modality",
    "tags": "tags",
}


class ContentBackendError(RuntimeError):
    """A content backend could not be reached or answered with an error."""


@dataclass(frozen=True)
class ContentItem:
    id: str
    title: str
    description: str
    transcript: str
    modality: str
    tags: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: dict) -> ContentItem:
        """An item from a catalog row; an unknown modality is an error, not a silent skip."""
        modality = str(record["modality"]).strip().lower()
        if modality not in MODALITIES:
            raise ValueError(f"content item {record.get('id')!r} has unknown modality {record['modality']!r}")
        return cls(
            id=str(record["id"]),
            title=str(record.get("title") or ""),
            description=str(record.get("description") or ""),
            transcript=str(record.get("transcript") or ""),
            modality=modality,
            tags=_as_tags(record.get("tags")),
        )

    def as_text(self, max_chars: int = 600) -> str:
        """``title. description. transcript`` in at most ``max_chars`` characters, for prompts."""
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        text = ""
        for part in (self.title, self.description, self.transcript):
            part = part.strip()
            if not part:
                continue
            if text:
                text += " " if text[-1] in ".!?" else ". "
            text += part
        if len(text) <= max_chars:
            return text
        return text[: max_chars - 1].rstrip() + "…"


class ContentBackend(ABC):
    """Where sample content comes from."""

    @property
    @abstractmethod
    def name(self) -> str:
        """A log-safe description of the backend (no credentials)."""

    @abstractmethod
    def sample(self, n: int, modality: str | None = None, seed: int | None = None) -> list[ContentItem]:
        """Up to ``n`` items, only of ``modality`` when given; deterministic per ``seed`` where the
        backend can be."""


@lru_cache(maxsize=1)
def _catalog_rows() -> tuple[dict, ...]:
    text = resources.files("cogniverse_resources").joinpath("data", "content_catalog.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def bundled_catalog() -> list[dict]:
    """The packaged content catalog, as fresh copies so callers can't corrupt the cache."""
    return [{**row, "tags": list(row.get("tags") or [])} for row in _catalog_rows()]


class CatalogContentBackend(ContentBackend):
    """Content from the bundled catalog, or from the given rows."""

    def __init__(self, records: list[dict] | None = None):
        self.items: tuple[ContentItem, ...] = tuple(
            ContentItem.from_record(record) for record in (bundled_catalog() if records is None else records)
        )

    @property
    def name(self) -> str:
        return "catalog"

    def sample(self, n: int, modality: str | None = None, seed: int | None = None) -> list[ContentItem]:
        if n < 0:
            raise ValueError("n must be non-negative")
        pool = [item for item in self.items if modality is None or item.modality == modality]
        return random.Random(seed).sample(pool, min(n, len(pool)))


class VespaContentBackend(ContentBackend):
    """Content from a Vespa application, randomly sampled by a rank profile.

    The schema is expected to define ``rank_profile`` with a random first phase (e.g.
    ``first-phase { expression: random }``). With a seed, the query also carries
    ``rankproperty.random.match.seed``: a profile ranking on ``random.match`` then returns the same
    sample for the same seed and corpus, while plain ``random`` ignores it and stays unseeded.

    ``skipped_hits`` counts the hits dropped so far for an unknown modality or a missing id.
    """

    def __init__(
        self,
        url: str,
        schema: str = "content",
        field_map: dict[str, str] | None = None,
        rank_profile: str = "random",
        timeout_s: float = 10.0,
        retries: int = 2,
    ):
        unknown = set(field_map or {}) - set(DEFAULT_FIELD_MAP)
        if unknown:
            raise ValueError(f"unknown field_map keys {sorted(unknown)}; expected some of {sorted(DEFAULT_FIELD_MAP)}")
        self.url = url.rstrip("/")
        self.schema = schema
        self.field_map = {**DEFAULT_FIELD_MAP, **(field_map or {})}
        self.rank_profile = rank_profile
        self.timeout_s = timeout_s
        self.retries = retries
        self.skipped_hits = 0
        self._safe_url = _redact(self.url)

    @property
    def name(self) -> str:
        return f"vespa {self._safe_url} schema={self.schema}"

    def query_body(self, n: int, modality: str | None = None, seed: int | None = None) -> dict:
        """The Vespa query-API request body for one ``sample`` call."""
        where = "true"
        if modality is not None:
            where = f'{self.field_map["modality"]} contains "{_yql_escape(modality)}"'
        body: dict = {
            "yql": f"select * from sources {self.schema} where {where} limit {n}",
            "ranking": self.rank_profile,
            "timeout": f"{self.timeout_s}s",
        }
        if seed is not None:
            body["rankproperty.random.match.seed"] = seed
        return body

    def sample(self, n: int, modality: str | None = None, seed: int | None = None) -> list[ContentItem]:
        if n < 0:
            raise ValueError("n must be non-negative")
        if n == 0:
            return []
        hits = self._query(self.query_body(n, modality, seed))
        items = []
        for hit in hits:
            item = self._item_from_hit(hit)
            if item is None:
                self.skipped_hits += 1
            else:
                items.append(item)
        return items

    def _query(self, body: dict) -> list[dict]:
        # Vespa.query() retries connection errors ten times with growing waits and a 120 s client
        # timeout; a session of our own keeps a dead endpoint from stalling a run for minutes.
        app = Vespa(url=self.url)
        try:
            with app.syncio(connections=1, num_retries_429=self.retries) as session:
                session.http_client.timeout = self.timeout_s
                response = session.query(body=body)
            payload = response.json
        except Exception as error:
            raise ContentBackendError(self._describe(error)) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("root"), dict):
            raise ContentBackendError(f"Vespa query to {self._safe_url} returned no result root")
        return [hit for hit in response.hits if isinstance(hit, dict)]

    def _item_from_hit(self, hit: dict) -> ContentItem | None:
        fields = hit.get("fields") or {}
        modality = str(fields.get(self.field_map["modality"]) or "").strip().lower()
        item_id = fields.get(self.field_map["id"]) or hit.get("id")
        if modality not in MODALITIES or not item_id:
            return None
        return ContentItem(
            id=str(item_id),
            title=_as_text(fields.get(self.field_map["title"])),
            description=_as_text(fields.get(self.field_map["description"])),
            transcript=_as_text(fields.get(self.field_map["transcript"])),
            modality=modality,
            tags=_as_tags(fields.get(self.field_map["tags"])),
        )

    def _describe(self, error: Exception) -> str:
        detail = _error_detail(error)
        password = urlparse(self.url).password
        if password:
            detail = detail.replace(password, "***")
        if len(detail) > 300:
            detail = detail[:299] + "…"
        return f"Vespa query to {self._safe_url} failed: {type(error).__name__}: {detail}"

    def __repr__(self) -> str:
        return f"VespaContentBackend({self._safe_url}, schema={self.schema!r})"


def _error_detail(error: Exception) -> str:
    """One line: Vespa's own error summaries when it sent some, else the first line of the error
    (httpr appends a multi-line native backtrace to some messages)."""
    status = getattr(getattr(error.__cause__, "response", None), "status_code", None)
    prefix = f"HTTP {status}: " if status else ""
    errors = error.args[0] if isinstance(error, VespaError) and error.args else None
    if isinstance(errors, list) and all(isinstance(entry, dict) for entry in errors):
        detail = "; ".join(
            ": ".join(str(entry[key]) for key in ("summary", "message") if entry.get(key)) or str(entry)
            for entry in errors
        )
    else:
        lines = str(error).strip().splitlines()
        detail = lines[0] if lines else ""
    return prefix + (" ".join(detail.split()) or type(error).__name__)


def _yql_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url, count=1)


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(part) for part in value)
    return str(value)


def _as_tags(value: object) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(tag) for tag in value)


class ContentBackendResource(dg.ConfigurableResource):
    """Dagster handle on the content backend: Vespa when ``VESPA_URL`` is set, else the bundled catalog."""

    vespa_url: str = Field(default="", description="e.g. http://vespa:8080; empty = bundled catalog")
    vespa_schema: str = Field(default="content", description="Vespa schema (document type) holding the content")
    vespa_rank_profile: str = Field(default="random", description="rank profile with a random first phase")
    vespa_field_map: dict[str, str] = Field(
        default_factory=dict, description="our field name -> Vespa field name; empty = same names"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ContentBackendResource":
        """The backend the environment names (``settings.RESOURCE_ENV``); ``overrides`` win."""
        return settings.from_env(cls, environ, **overrides)

    def backend(self) -> ContentBackend:
        if self.vespa_url:
            return VespaContentBackend(
                self.vespa_url,
                schema=self.vespa_schema,
                field_map=self.vespa_field_map,
                rank_profile=self.vespa_rank_profile,
            )
        return CatalogContentBackend()
