"""Exact counts and feedback read from a real Phoenix's own database, Postgres and SQLite, against
the GraphQL reads of the same Phoenix and against what ``routing_traces`` ingestion labels
(``cogniverse_assets.examples``)."""

import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pytest
from opentelemetry.trace import Status, StatusCode

from cogniverse_assets.examples import LABELED_PROVENANCES, label_examples, parse_page
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_resources import phoenix_database, settings
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.phoenix import LaneCountRequest, PhoenixResource
from cogniverse_resources.phoenix_database import PhoenixDatabase, PhoenixDatabaseUnavailable
from cogniverse_resources.stack import free_port, sqlite_phoenix_database_url
from cogniverse_resources.tracer import RoutingDecision, RoutingTracer

NOW = datetime.now(timezone.utc)
OLD, MIDDLE, NEW = NOW - timedelta(hours=3), NOW - timedelta(hours=2), NOW - timedelta(hours=1)


@dataclass(frozen=True)
class Annotation:
    span_id: str
    label: str | None  # None: a score without a label
    kind: str = "HUMAN"
    identifier: str = "human"


class Spans:
    """Writes one tenant's spans (backdated) and ``routing_feedback`` annotations into Phoenix."""

    def __init__(self, phoenix: PhoenixResource, prefix: str):
        self.phoenix = phoenix
        self.tenant = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.tracer = RoutingTracer(phoenix, self.tenant)
        self.ids: list[str] = []
        self.annotations: list[Annotation] = []

    def decision(self, module, label, confidence, success=True, start=MIDDLE, query="a query") -> str:
        decision = RoutingDecision(module, query, label, confidence, 5.0, "v0", success=success)
        self.ids.append(self.tracer.record(decision, start_time=start))
        return self.ids[-1]

    def raw(self, attributes: dict, name: str = tc.SPAN_NAME, start=MIDDLE) -> str:
        """A span the RoutingDecision API would not write."""
        start_ns = int(start.timestamp() * 1_000_000_000)
        with self.tracer._tracer.start_as_current_span(name, attributes=attributes, start_time=start_ns) as span:
            span.set_status(Status(StatusCode.OK))
            self.ids.append(format(span.get_span_context().span_id, "016x"))
        return self.ids[-1]

    def annotate(self, span_id: str, label: str | None, kind: str = "HUMAN", identifier: str | None = None) -> None:
        self.annotations.append(Annotation(span_id, label, kind, identifier or kind.lower()))

    def send(self) -> str:
        self.tracer.flush()
        self.tracer.shutdown()
        self.phoenix.wait_for_spans(self.tenant, self.ids)
        result = lambda item: {"score": 1.0} if item.label is None else {"label": item.label, "score": 1.0}  # noqa: E731
        self.phoenix.client().spans.log_span_annotations(
            span_annotations=[
                {
                    "span_id": item.span_id,
                    "name": tc.FEEDBACK_ANNOTATION,
                    "annotator_kind": item.kind,
                    "result": result(item),
                    "identifier": item.identifier,
                }
                for item in self.annotations
            ],
            sync=True,
        )
        return self.tenant


def _modality(query="a query", **attributes) -> dict:
    return {tc.MODULE: "modality", tc.QUERY: query, **attributes}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def phoenix_read(request, backend) -> PhoenixResource:
    """The Phoenix whose database is read: the session's SQLite or Postgres one."""
    return request.getfixturevalue(f"phoenix_{backend}")


@pytest.fixture(scope="module")
def database_url(request, backend, phoenix_read) -> str:
    if backend == "sqlite":
        return request.getfixturevalue("phoenix_sqlite_database")
    # Phoenix's own form of the URL, as an operator would copy it from PHOENIX_SQL_DATABASE_URL.
    return request.getfixturevalue("phoenix_postgres_database").replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="module")
def agreeing_tenant(phoenix_read) -> str:
    """Spans on which GraphQL's filter and ingestion's rules agree."""
    spans = Spans(phoenix_read, "db-agree")
    spans.annotate(spans.decision("modality", "video", 0.2, start=OLD), "image")  # human label
    spans.annotate(spans.decision("modality", "video", 0.2), "audio", "LLM")  # LLM label
    spans.decision("modality", "video", 0.9)  # the router's answer: confident, agent succeeded
    spans.decision("modality", "video", 0.9, success=False, start=NEW)  # agent failed
    spans.decision("modality", "text", 0.5, start=NEW)  # counts from min_confidence 0.5 down
    spans.decision("modality", "text", 0.95, success=None, start=NEW)  # no agent outcome
    spans.annotate(spans.decision("modality", "video", 0.2, start=NEW), "smell-o-vision")  # quarantined
    spans.annotate(spans.decision("modality", "video", 0.2, start=NEW), None)  # a score, no label
    spans.decision("modality", "video", None, start=NEW)  # no confidence
    spans.raw(_modality(**{tc.MODALITY: "video", tc.AGENT_SUCCESS: True, tc.CONFIDENCE: 0.9}), name="other.span")
    spans.annotate(spans.decision("routing", "video_search_agent", 0.1), "document_agent")
    spans.decision("routing", "video_search_agent", 0.8, start=NEW)
    spans.decision("cross_modal", "rrf", 0.99, start=OLD)
    return spans.send()


@pytest.fixture(scope="module")
def differing_tenant(phoenix_read) -> str:
    """Spans GraphQL's filter counts and ingestion does not label (all modality, min confidence 0.7),
    and one both count."""
    spans = Spans(phoenix_read, "db-differ")
    spans.annotate(spans.decision("modality", "video", 0.2), "image")  # both count it
    spans.annotate(spans.decision("modality", "video", 0.2), "image", "CODE")  # a CODE annotator
    contradicted = spans.decision("modality", "video", 0.2)
    spans.annotate(contradicted, "image", "HUMAN")
    spans.annotate(contradicted, "smell-o-vision", "LLM")  # contradictory feedback: quarantined
    spans.annotate(spans.decision("modality", "video", 0.9), "smell-o-vision")  # router fine, feedback not
    spans.annotate(spans.decision("modality", "video", 0.9), "smell-o-vision", "CODE")  # any kind quarantines
    spans.annotate(spans.raw(_modality(**{tc.MODALITY: "hologram"})), "image")  # non-canonical answer
    spans.annotate(spans.raw(_modality(query="   ")), "image")  # blank query
    spans.raw(
        _modality("q" * (tc.MAX_QUERY_CHARS + 1), **{tc.MODALITY: "video", tc.AGENT_SUCCESS: True, tc.CONFIDENCE: 0.9})
    )  # query too long
    spans.raw(_modality(**{tc.MODALITY: "video", tc.AGENT_SUCCESS: True, tc.CONFIDENCE: 1.5}))  # confidence > 1
    return spans.send()


@pytest.fixture(scope="module")
def counter(database_url) -> PhoenixDatabase:
    return PhoenixDatabase(database_url)


def _requests(tenants, since, min_confidence, modules=tc.MODULE_NAMES) -> dict[str, LaneCountRequest]:
    return {tenant: LaneCountRequest(dict.fromkeys(modules, since), min_confidence) for tenant in tenants}


def _ingested_labels(phoenix: PhoenixResource, tenant: str, module: str, min_confidence: float) -> int:
    """The labeled examples ``routing_traces`` ingestion makes of the tenant's spans: its reads, its
    parsing and its labeling."""
    spec = ROUTING_MODULES[module]
    start, end = NOW - timedelta(days=1), datetime.now(timezone.utc) + timedelta(minutes=1)
    spans = [span for page in phoenix.iter_routing_spans(tenant, module, start, end) for span in page]
    examples, _ = parse_page(spans, spec)
    feedback = phoenix.feedback_annotations_between(tenant, module, start, end)
    labeled, _ = label_examples(examples, feedback, spec, min_confidence)
    return sum(example["provenance"] in LABELED_PROVENANCES for example in labeled)


def test_database_counts_equal_graphql_counts_where_the_rules_agree(phoenix_read, counter, agreeing_tenant):
    absent = f"db-absent-{uuid.uuid4().hex[:6]}"  # no project
    tenants = [agreeing_tenant, absent]
    for since in (None, MIDDLE - timedelta(minutes=30), NEW - timedelta(minutes=30), NOW + timedelta(minutes=5)):
        for min_confidence in (0.7, 0.5):
            requests = _requests(tenants, since, min_confidence)
            graphql, errors = phoenix_read.count_labeled_routing_spans_many(requests)
            assert errors == {}
            assert counter.count(requests) == graphql, (since, min_confidence)
    everything = counter.count(_requests(tenants, None, 0.7))
    assert everything[agreeing_tenant] == {"modality": 3, "cross_modal": 1, "routing": 2}
    assert everything[absent] == {"modality": 0, "cross_modal": 0, "routing": 0}
    assert counter.count(_requests([agreeing_tenant], NEW - timedelta(minutes=30), 0.5))[agreeing_tenant] == {
        "modality": 1,
        "cross_modal": 0,
        "routing": 1,
    }
    # Ingestion labels the same spans.
    assert {module: _ingested_labels(phoenix_read, agreeing_tenant, module, 0.7) for module in tc.MODULE_NAMES} == (
        everything[agreeing_tenant]
    )


def test_database_counts_what_ingestion_labels_where_graphql_counts_more(phoenix_read, counter, differing_tenant):
    requests = _requests([differing_tenant], None, 0.7, modules=["modality"])
    graphql, _ = phoenix_read.count_labeled_routing_spans_many(requests)
    ingested = _ingested_labels(phoenix_read, differing_tenant, "modality", 0.7)
    assert ingested == 1
    assert counter.count(requests) == {differing_tenant: {"modality": ingested}}
    assert graphql == {differing_tenant: {"modality": 9}}  # the GraphQL filter cannot tell these apart


def test_feedback_from_the_database_equals_the_graphql_read(phoenix_read, counter, agreeing_tenant, differing_tenant):
    start, end = NOW - timedelta(days=1), datetime.now(timezone.utc) + timedelta(minutes=1)
    windows = [(start, end), (NEW - timedelta(minutes=30), end), (start, MIDDLE - timedelta(minutes=30))]
    absent = f"db-absent-{uuid.uuid4().hex[:6]}"  # no project
    for tenant in (agreeing_tenant, differing_tenant, absent):
        for module in tc.MODULE_NAMES:
            for window in windows:
                graphql = phoenix_read.feedback_annotations_between(tenant, module, *window)
                assert counter.feedback_annotations_between(tenant, module, *window, timeout_s=30) == graphql
    # What the comparison covered: several annotations on one span, every kind, a score without a
    # label, a label outside the module's; other modules' and other windows' feedback left out.
    everything = counter.feedback_annotations_between(differing_tenant, "modality", start, end, timeout_s=30)
    assert len(everything) == 7 and sum(map(len, everything.values())) == 8
    assert {item["annotator_kind"] for items in everything.values() for item in items} == {"HUMAN", "LLM", "CODE"}
    agreeing = counter.feedback_annotations_between(agreeing_tenant, "modality", start, end, timeout_s=30)
    assert sorted(str(items[0]["result"]["label"]) for items in agreeing.values()) == [
        "None",
        "audio",
        "image",
        "smell-o-vision",
    ]
    assert len(counter.feedback_annotations_between(agreeing_tenant, "routing", start, end, timeout_s=30)) == 1
    assert len(counter.feedback_annotations_between(agreeing_tenant, "modality", *windows[2], timeout_s=30)) == 1


def test_lanes_go_in_statements_of_whole_tenants_and_stop_at_the_deadline(
    counter, agreeing_tenant, monkeypatch, database_url
):
    tenants = [agreeing_tenant, *(f"db-absent-{index}" for index in range(4))]
    requests = _requests(tenants, None, 0.7)
    whole = PhoenixDatabase(database_url).count(requests)
    monkeypatch.setattr(phoenix_database, "LANES_PER_STATEMENT", 7)  # two tenants of three lanes a statement
    chunked = PhoenixDatabase(database_url)
    assert chunked.count(requests) == whole and chunked.statements == 3
    late = PhoenixDatabase(database_url)
    # Past the deadline only the first statement runs: its tenants are counted entirely, the others not at all.
    assert late.count(requests, deadline=time.monotonic() - 1) == {tenant: whole[tenant] for tenant in tenants[:2]}
    assert late.statements == 1


def test_every_read_is_read_only(counter, backend, monkeypatch):
    write = "INSERT INTO projects (name) VALUES ('written') RETURNING id, 0"
    refused = {"postgres": "read-only transaction", "sqlite": "attempt to write a readonly database"}[backend]
    for statement in ("_COUNT_SQL", "_SQLITE_COUNT_SQL", "_FEEDBACK_SQL", "_SQLITE_FEEDBACK_SQL"):
        monkeypatch.setattr(phoenix_database, statement, write)
    with pytest.raises(PhoenixDatabaseUnavailable, match=refused):
        counter.count(_requests(["anyone"], None, 0.7))
    with pytest.raises(PhoenixDatabaseUnavailable, match=refused):
        counter.feedback_annotations_between("anyone", "modality", NOW, NOW, timeout_s=5)


def test_a_sqlite_phoenix_is_read_beside_its_writer(phoenix_sqlite, phoenix_sqlite_database, monkeypatch):
    """Reading Phoenix's SQLite file from another process is safe only because Phoenix keeps it in
    write-ahead-log mode (readers never block its writer); and a statement that runs past its
    timeout is interrupted, as on Postgres."""
    journal = PhoenixDatabase(phoenix_sqlite_database)._read(
        "journal", "failed to read", lambda connection: connection.execute("PRAGMA journal_mode").fetchone()[0]
    )
    assert journal == "wal"
    endless = "WITH RECURSIVE step(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM step) SELECT count(*), 0 FROM step"
    monkeypatch.setattr(phoenix_database, "_SQLITE_COUNT_SQL", endless)
    monkeypatch.setattr(phoenix_database, "STATEMENT_TIMEOUT_S", 0.2)
    started = time.monotonic()
    with pytest.raises(PhoenixDatabaseUnavailable, match="after its 0.2 s timeout"):
        PhoenixDatabase(phoenix_sqlite_database).count(_requests(["anyone"], None, 0.7))
    assert time.monotonic() - started < 5


def test_an_unusable_database_is_a_clear_error_without_the_password(phoenix_postgres_database, tmp_path):
    requests = _requests(["anyone"], None, 0.7)
    dead = f"postgresql://reader:s3cret-pw@127.0.0.1:{free_port()}/phoenix"
    no_phoenix = urlunsplit(urlsplit(phoenix_postgres_database)._replace(path="/postgres"))  # no Phoenix tables
    sqlite3.connect(tmp_path / "phoenix.db").close()  # a SQLite file without Phoenix's tables
    cases = {
        dead: "could not connect to Phoenix's database postgresql://***@127.0.0.1",
        no_phoenix: 'relation "projects" does not exist',
        sqlite_phoenix_database_url(tmp_path): "no such table: projects",
        sqlite_phoenix_database_url(tmp_path / "missing"): "could not connect to Phoenix's database sqlite:///",
        "sqlite:///phoenix.db": "is not sqlite:/// followed by an absolute path",
        "mysql://reader:s3cret-pw@db/phoenix": "is neither a Postgres URL",
        "postgresql://reader:s3cret-pw@[::1/phoenix": "is neither a Postgres URL",  # unparseable
    }
    reads = {
        "count": lambda database: database.count(requests),
        "feedback": lambda database: database.feedback_annotations_between("anyone", "modality", NOW, NOW, 5),
    }
    for url, expected in cases.items():
        for read in reads.values():
            with pytest.raises(PhoenixDatabaseUnavailable) as raised:
                read(PhoenixDatabase(url))
            assert expected in str(raised.value)
            assert "s3cret-pw" not in str(raised.value) and raised.value.__cause__ is None


def test_the_setting_is_an_env_var_and_never_reaches_a_tenants_own_phoenix():
    url = "postgresql://reader:s3cret-pw@db.internal:5432/phoenix"
    environ = {"COGNIVERSE_PHOENIX_READ_DATABASE_URL": url}
    assert settings.env_vars(PhoenixResource, environ) == {
        "read_database_url": dg.EnvVar("COGNIVERSE_PHOENIX_READ_DATABASE_URL")
    }
    shared = PhoenixResource.from_env(environ, endpoint="http://phoenix:6006")
    assert shared.read_database_url == url and PhoenixResource().read_database_url is None
    assert shared.for_tenant("http://phoenix:6006/").read_database_url == url  # the shared Phoenix itself
    assert shared.for_tenant("https://tenant-phoenix.example.com").read_database_url is None
