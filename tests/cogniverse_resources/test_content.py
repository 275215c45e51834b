"""Content backends: the bundled catalog, and the Vespa client.

Vespa itself cannot run on this machine (it needs Docker), so the Vespa backend is tested against a
local HTTP server that speaks Vespa's query-API wire format (``/search/``, the ``root``/``children``
result shape, error bodies). It runs the real pyvespa client end to end over a real socket.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from cogniverse_resources.content import (
    CatalogContentBackend,
    ContentBackend,
    ContentBackendError,
    ContentBackendResource,
    ContentItem,
    VespaContentBackend,
    bundled_catalog,
)
from cogniverse_resources.trace_contract import MODALITIES

# --- catalog ---------------------------------------------------------------------------------


def test_bundled_catalog_covers_every_modality():
    rows = bundled_catalog()
    assert len(rows) >= 150
    assert set(Counter(row["modality"] for row in rows)) == set(MODALITIES)
    assert len({row["id"] for row in rows}) == len(rows)


def test_bundled_catalog_returns_copies():
    first = bundled_catalog()
    first[0]["title"] = "changed"
    first[0]["tags"].append("changed")
    second = bundled_catalog()
    assert second[0]["title"] != "changed"
    assert "changed" not in second[0]["tags"]


def test_catalog_sample_sizes():
    backend = CatalogContentBackend()
    total = len(bundled_catalog())
    assert len(backend.sample(10, seed=1)) == 10
    assert backend.sample(0) == []
    everything = backend.sample(total + 50, seed=1)
    assert len(everything) == total
    assert len({item.id for item in everything}) == total
    with pytest.raises(ValueError):
        backend.sample(-1)


@pytest.mark.parametrize("modality", MODALITIES)
def test_catalog_modality_filter(modality):
    items = CatalogContentBackend().sample(500, modality=modality, seed=3)
    assert items and all(item.modality == modality for item in items)
    assert len(items) == sum(row["modality"] == modality for row in bundled_catalog())


def test_catalog_seed_is_deterministic():
    backend = CatalogContentBackend()
    ids = lambda seed: [item.id for item in backend.sample(20, seed=seed)]  # noqa: E731
    assert ids(7) == ids(7)
    assert ids(7) != ids(8)
    assert [item.id for item in CatalogContentBackend().sample(20, seed=7)] == ids(7)


def test_catalog_from_given_rows_and_bad_modality():
    rows = [
        {"id": "a", "title": "A", "description": "", "transcript": "", "modality": "video", "tags": ["x"]},
        {"id": "b", "title": "B", "description": "", "transcript": "", "modality": "audio", "tags": []},
    ]
    backend = CatalogContentBackend(rows)
    assert isinstance(backend, ContentBackend) and backend.name == "catalog"
    assert [item.id for item in backend.sample(5, modality="audio")] == ["b"]
    assert backend.sample(5, modality="image") == []
    assert backend.sample(5, modality="video")[0].tags == ("x",)
    with pytest.raises(ValueError, match="unknown modality"):
        CatalogContentBackend([{**rows[0], "modality": "hologram"}])


def test_item_as_text_joins_and_truncates():
    item = ContentItem(id="1", title="Title", description="Says why?", transcript="Then more words", modality="text")
    assert item.as_text() == "Title. Says why? Then more words"
    short = item.as_text(max_chars=12)
    assert len(short) <= 12 and short.endswith("…") and short.startswith("Title.")
    assert ContentItem(id="2", title="Only", description="", transcript="", modality="text").as_text() == "Only"


# --- Vespa: a local server speaking the query API ------------------------------------------


def vespa_hit(doc_id: str, **fields) -> dict:
    return {
        "id": f"id:content:content::{doc_id}",
        "relevance": 0.42,
        "source": "content",
        "fields": {"sddocname": "content", "documentid": f"id:content:content::{doc_id}", **fields},
    }


def vespa_result(hits: list[dict]) -> dict:
    return {
        "root": {
            "id": "toplevel",
            "relevance": 1.0,
            "fields": {"totalCount": len(hits)},
            "coverage": {
                "coverage": 100,
                "documents": len(hits),
                "full": True,
                "nodes": 1,
                "results": 1,
                "resultsFull": 1,
            },
            "children": hits,
        }
    }


class FakeVespa:
    """Answers ``/search/`` with a configurable status and body; records every request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.payload: object = vespa_result([])
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def last_query(self) -> dict:
        """The last request's parameters, body and query string merged, as Vespa reads them."""
        request = self.requests[-1]
        return {**request["params"], **(request["body"] or {})}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _answer(self, body: dict | None):
                parsed = urlparse(self.path)
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": parsed.path,
                        "params": {key: values[-1] for key, values in parse_qs(parsed.query).items()},
                        "body": body,
                        "headers": {key.lower(): value for key, value in self.headers.items()},
                    }
                )
                if parsed.path != "/search/":
                    self._send(404, {"message": f"no handler for {parsed.path}"})
                    return
                self._send(fake.status, fake.payload)

            def _send(self, status: int, payload: object):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                content_type = "text/html" if isinstance(payload, bytes) else "application/json;charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                self._answer(json.loads(raw) if raw else None)

        return Handler


@pytest.fixture
def fake_vespa():
    fake = FakeVespa()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        fake.thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_vespa_query_shape_and_hit_mapping(fake_vespa):
    fake_vespa.payload = vespa_result(
        [
            vespa_hit(
                "c1",
                id="c1",
                title="Brake pads",
                description="DIY",
                transcript="Hang the caliper",
                modality="video",
                tags=["cars", "diy"],
            ),
            vespa_hit("c2", id="c2", title="Podcast", modality="audio"),
        ]
    )
    backend = VespaContentBackend(fake_vespa.url, schema="media", timeout_s=5)
    items = backend.sample(7)
    assert items == [
        ContentItem(
            id="c1",
            title="Brake pads",
            description="DIY",
            transcript="Hang the caliper",
            modality="video",
            tags=("cars", "diy"),
        ),
        ContentItem(id="c2", title="Podcast", description="", transcript="", modality="audio", tags=()),
    ]
    request = fake_vespa.requests[-1]
    assert request["method"] == "POST" and request["path"] == "/search/"
    query = fake_vespa.last_query()
    assert "from sources media" in query["yql"]
    assert query["yql"].endswith("where true limit 7")
    assert query["ranking"] == "random"
    assert "rankproperty.random.match.seed" not in query
    assert backend.skipped_hits == 0


def test_vespa_modality_filter_seed_and_rank_profile(fake_vespa):
    fake_vespa.payload = vespa_result([vespa_hit("i1", id="i1", title="Cat", modality="image")])
    backend = VespaContentBackend(fake_vespa.url + "/", rank_profile="shuffle", timeout_s=5)
    assert [item.id for item in backend.sample(3, modality="image", seed=11)] == ["i1"]
    query = fake_vespa.last_query()
    assert query["yql"] == 'select * from sources content where modality contains "image" limit 3'
    assert query["ranking"] == "shuffle"
    assert query["rankproperty.random.match.seed"] == 11
    assert fake_vespa.requests[-1]["path"] == "/search/"  # trailing slash in the URL is not doubled


def test_vespa_modality_value_is_escaped(fake_vespa):
    backend = VespaContentBackend(fake_vespa.url, timeout_s=5)
    assert backend.sample(2, modality='vi"deo\\') == []
    assert (
        fake_vespa.last_query()["yql"] == 'select * from sources content where modality contains "vi\\"deo\\\\" limit 2'
    )


def test_vespa_custom_field_map(fake_vespa):
    fake_vespa.payload = vespa_result(
        [
            vespa_hit(
                "d1",
                doc_key="d1",
                headline="Quarterly report",
                summary="Numbers",
                body="Revenue up",
                kind="document",
                labels="finance",
            )
        ]
    )
    field_map = {
        "id": "doc_key",
        "title": "headline",
        "description": "summary",
        "transcript": "body",
        "modality": "kind",
        "tags": "labels",
    }
    backend = VespaContentBackend(fake_vespa.url, field_map=field_map, timeout_s=5)
    [item] = backend.sample(1, modality="document")
    assert item == ContentItem(
        id="d1",
        title="Quarterly report",
        description="Numbers",
        transcript="Revenue up",
        modality="document",
        tags=("finance",),
    )
    assert 'where kind contains "document"' in fake_vespa.last_query()["yql"]
    with pytest.raises(ValueError, match="unknown field_map keys"):
        VespaContentBackend(fake_vespa.url, field_map={"headline": "title"})


def test_vespa_skips_hits_with_unknown_modality(fake_vespa):
    fake_vespa.payload = vespa_result(
        [
            vespa_hit("t1", id="t1", title="Notes", modality="text"),
            vespa_hit("x1", id="x1", title="Hologram", modality="hologram"),
            vespa_hit("x2", id="x2", title="No modality"),
            vespa_hit("v1", title="Falls back to the document id", modality="VIDEO"),
        ]
    )
    backend = VespaContentBackend(fake_vespa.url, timeout_s=5)
    items = backend.sample(10)
    assert [(item.id, item.modality) for item in items] == [("t1", "text"), ("id:content:content::v1", "video")]
    assert backend.skipped_hits == 2


def test_vespa_server_error_is_one_line_without_credentials(fake_vespa):
    fake_vespa.status = 500
    fake_vespa.payload = {
        "root": {
            "id": "toplevel",
            "relevance": 1.0,
            "fields": {"totalCount": 0},
            "errors": [{"code": 12, "summary": "Timed out", "source": "content", "message": "backend\nwent away"}],
        }
    }
    url = f"http://user:secret@127.0.0.1:{fake_vespa.port}"
    backend = VespaContentBackend(url, timeout_s=5)
    assert "secret" not in backend.name and "secret" not in repr(backend)
    with pytest.raises(ContentBackendError) as caught:
        backend.sample(5)
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message
    assert "127.0.0.1" in message and "HTTP 500" in message and "Timed out: backend went away" in message
    # The credentials still reach the server, as HTTP basic auth.
    assert fake_vespa.requests[-1]["headers"].get("authorization", "").startswith("Basic ")


def test_vespa_non_json_answer_raises(fake_vespa):
    fake_vespa.payload = b"<html>proxy login</html>"
    with pytest.raises(ContentBackendError) as caught:
        VespaContentBackend(fake_vespa.url, timeout_s=5).sample(5)
    assert "\n" not in str(caught.value)


def test_vespa_closed_port_raises_one_line_without_credentials():
    backend = VespaContentBackend(f"http://user:secret@127.0.0.1:{closed_port()}", timeout_s=2, retries=0)
    with pytest.raises(ContentBackendError) as caught:
        backend.sample(5)
    message = str(caught.value)
    assert "\n" not in message and "secret" not in message
    assert "127.0.0.1" in message


# --- the Dagster resource --------------------------------------------------------------------


def test_resource_uses_catalog_without_vespa_url(monkeypatch):
    monkeypatch.delenv("VESPA_URL", raising=False)
    monkeypatch.delenv("VESPA_FIELD_MAP", raising=False)
    resource = ContentBackendResource.from_env()
    assert resource.vespa_url == "" and resource.vespa_schema == "content" and resource.vespa_rank_profile == "random"
    assert resource.vespa_field_map == {}
    assert isinstance(resource.backend(), CatalogContentBackend)


def test_resource_uses_vespa_from_environment(monkeypatch, fake_vespa):
    monkeypatch.setenv("VESPA_URL", fake_vespa.url)
    monkeypatch.setenv("VESPA_SCHEMA", "media")
    monkeypatch.setenv("VESPA_RANK_PROFILE", "shuffle")
    monkeypatch.setenv("VESPA_FIELD_MAP", json.dumps({"title": "headline"}))
    fake_vespa.payload = vespa_result([vespa_hit("a1", id="a1", headline="Interview", modality="audio")])
    backend = ContentBackendResource.from_env().backend()
    assert isinstance(backend, VespaContentBackend)
    assert backend.field_map["title"] == "headline" and backend.field_map["modality"] == "modality"
    assert [(item.id, item.title) for item in backend.sample(4)] == [("a1", "Interview")]
    query = fake_vespa.last_query()
    assert "from sources media" in query["yql"] and query["ranking"] == "shuffle"


def test_resource_rejects_a_malformed_field_map(monkeypatch):
    monkeypatch.setenv("VESPA_FIELD_MAP", "[1, 2]")
    with pytest.raises(ValueError, match="VESPA_FIELD_MAP"):
        ContentBackendResource.from_env()
