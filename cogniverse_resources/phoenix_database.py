"""Reads straight from Phoenix's own database, Postgres or SQLite: the sensor's exact counts,
every lane at once, and ingestion's feedback annotations.

Phoenix's GraphQL ``recordCount`` runs one SQL query per lane when each lane has its own start
time, about 90 tenants per 3 s on 2 cores (docs/benchmarks.md). The same counts are one grouped
statement on Phoenix's tables (``projects`` → ``traces`` → ``spans``, ``span_annotations``), with
the lanes passed as parallel arrays (``unnest``), so the statement's size grows with the lanes'
values only and thousands of lanes cost one round trip. Phoenix's GraphQL also resolves every
field of every annotation on its own (about 0.75 s per 1,000 annotated spans on 2 cores); one
joined statement reads the same feedback in a fraction of that.

On Postgres every read runs in a read-only transaction and needs only ``SELECT`` on those four
tables. A Phoenix on SQLite (``sqlite:///`` and the file's absolute path, on this machine) is opened
read-only (``mode=ro``); Phoenix keeps that file in write-ahead-log mode, so a read never blocks its
writes. The two dialects' statements apply the same rules (tests compare both with ingestion).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator, Mapping, Sequence, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg2  # ships with dagster-postgres

from cogniverse_resources import trace_contract as tc
from cogniverse_resources.phoenix import LaneCountRequest, PhoenixUnavailable, feedback_record
from cogniverse_resources.redaction import REDACTED, redact_url, redact_urls

# URL schemes of a Phoenix Postgres database (Phoenix itself takes the asyncpg form), all read
# here through psycopg2.
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg2", "postgresql+psycopg")
SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")
# How SQLAlchemy (so Phoenix) stores a UTC timestamp in SQLite: text that sorts as time does.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SQLITE_STEPS_PER_DEADLINE_CHECK = 10_000  # virtual-machine steps between two looks at a statement's clock
LANES_PER_STATEMENT = 5000  # a statement's lanes: its arrays stay well under a megabyte
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 6  # one statement (5,000 lanes take under a second); sensors.DATABASE_COUNT_BUDGET_S says why
COUNT_APPLICATION = "cogniverse-sensor-count"  # how these reads show in pg_stat_activity
FEEDBACK_APPLICATION = "cogniverse-ingestion-feedback"
DRIVER_ERRORS = (psycopg2.Error, sqlite3.Error)
Connection = psycopg2.extensions.connection | sqlite3.Connection
Result = TypeVar("Result")


class PhoenixDatabaseUnavailable(PhoenixUnavailable):
    """Phoenix's database could not be read (unreachable, refused, unsupported URL, unexpected
    schema). The message never holds the URL's password."""


@dataclass(frozen=True)
class Lane:
    """One tenant × module count: the spans of ``project`` since ``since`` (``None``: all)."""

    tenant_id: str
    module: str
    project: str
    since: datetime | None
    min_confidence: float


def _path(attribute: str) -> list[str]:
    """Where Phoenix keeps a dotted span attribute: it stores ``routing.module`` nested, as
    ``{"routing": {"module": ...}}``, so the JSON path is the attribute split at its dots."""
    return attribute.split(".")


def _json_path(attribute: str) -> str:
    """``_path`` as a SQLite JSON path: ``$."routing"."module"``."""
    return "$." + ".".join(json.dumps(part) for part in _path(attribute))


def _sqlite_time(moment: datetime | None) -> str | None:
    """``moment`` as Phoenix's SQLite stores a timestamp (UTC, ``SQLITE_TIME_FORMAT``)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime(SQLITE_TIME_FORMAT)


def _utc(stamp: datetime | str) -> datetime:
    """A timestamp read from either database, as an aware UTC datetime."""
    moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# The lane rules, passed as parameters; nothing of the contract is spelled out in the SQL.
# A span of a lane counts when it is the lane's module's routing span, keeps the part of the
# contract ingestion quarantines on (below), and is labeled the way examples.choose_label labels.
# Each lane is counted in a LATERAL subquery that walks from its project to the project's traces
# (index on project_rowid) and from each trace to its spans (index on trace_rowid); OFFSET 0 keeps
# the planner from flattening those steps. Joined as plain tables, the planner (without
# statistics on a freshly written Phoenix, and misjudging the JSON filters) paired every span with
# every lane of its module, or scanned all spans once per lane: 3,000 lanes over 60,000 spans ran
# past 20 s; this way 5,000 lanes take under a second (docs/benchmarks.md).
_COUNT_SQL = """
WITH lane AS (
    SELECT * FROM unnest(
        %(lane_ids)s::int[], %(projects)s::text[], %(modules)s::text[], %(since)s::timestamptz[],
        %(min_confidence)s::float8[]
    ) AS lane(lane_id, project_name, module, since, min_confidence)
),
decision AS (
    SELECT * FROM unnest(%(decision_modules)s::text[], %(decision_attributes)s::text[])
        AS decision(module, attribute)
),
canonical AS (
    SELECT * FROM unnest(%(label_modules)s::text[], %(labels)s::text[]) AS canonical(module, label)
)
SELECT lane.lane_id, counted.labeled
FROM lane
JOIN decision ON decision.module = lane.module
JOIN projects AS project ON project.name = lane.project_name
CROSS JOIN LATERAL (
    SELECT count(*) AS labeled
    FROM (
        SELECT
            span.id AS span_rowid,
            span.attributes #> string_to_array(decision.attribute, '.') AS answer,
            span.attributes #> %(query_path)s::text[] AS query,
            span.attributes #> %(confidence_path)s::text[] AS confidence,
            span.attributes #> %(success_path)s::text[] AS success
        FROM (SELECT trace.id FROM traces AS trace WHERE trace.project_rowid = project.id OFFSET 0) AS trace
        CROSS JOIN LATERAL (
            SELECT span.id, span.attributes
            FROM spans AS span
            WHERE span.trace_rowid = trace.id
              AND span.name = %(span_name)s
              AND span.attributes #>> %(module_path)s::text[] = lane.module
              AND (lane.since IS NULL OR span.start_time >= lane.since)
            OFFSET 0
        ) AS span
    ) AS routing_span
    WHERE
        -- Contract: a query that is a non-blank string of at most MAX_QUERY_CHARS characters, a
        -- router answer that is canonical or absent, a confidence that is a number in [0, 1] or absent.
        coalesce(jsonb_typeof(routing_span.query) = 'string', false)
        AND btrim(routing_span.query #>> '{}') <> ''
        AND length(routing_span.query #>> '{}') <= %(max_query_chars)s
        AND (
            routing_span.answer IS NULL OR jsonb_typeof(routing_span.answer) = 'null'
            OR (jsonb_typeof(routing_span.answer) = 'string' AND EXISTS (
                SELECT 1 FROM canonical
                WHERE canonical.module = lane.module AND canonical.label = routing_span.answer #>> '{}'))
        )
        AND (
            routing_span.confidence IS NULL OR jsonb_typeof(routing_span.confidence) = 'null'
            OR (jsonb_typeof(routing_span.confidence) = 'number'
                AND (CASE WHEN jsonb_typeof(routing_span.confidence) = 'number'
                          THEN (routing_span.confidence #>> '{}')::float8 END) BETWEEN 0 AND 1)
        )
        -- Any feedback label outside the module's labels quarantines the span (whoever wrote it).
        AND NOT EXISTS (
            SELECT 1 FROM span_annotations AS annotation
            WHERE annotation.span_rowid = routing_span.span_rowid
              AND annotation.name = %(feedback_name)s
              AND annotation.label IS NOT NULL
              AND NOT EXISTS (
                  SELECT 1 FROM canonical
                  WHERE canonical.module = lane.module AND canonical.label = annotation.label)
        )
        AND (
            -- Labeled by a person or an LLM judge ...
            EXISTS (
                SELECT 1 FROM span_annotations AS annotation
                JOIN canonical ON canonical.module = lane.module AND canonical.label = annotation.label
                WHERE annotation.span_rowid = routing_span.span_rowid
                  AND annotation.name = %(feedback_name)s
                  AND annotation.annotator_kind = ANY(%(annotator_kinds)s::text[])
            )
            -- ... or by the router's own answer, when the agent succeeded and it was confident enough.
            OR coalesce(
                jsonb_typeof(routing_span.answer) = 'string'
                AND routing_span.success = 'true'::jsonb
                AND (CASE WHEN jsonb_typeof(routing_span.confidence) = 'number'
                          THEN (routing_span.confidence #>> '{}')::float8 END) >= lane.min_confidence,
                false
            )
        )
) AS counted
WHERE counted.labeled > 0
"""


# The same rules in SQLite's dialect. The lanes and the module labels come as JSON arrays
# (json_each); a lane's JSON paths are built in Python (``_sqlite_path``). SQLite's planner walks
# each lane's correlated subquery from the project's traces (index on project_rowid) to their spans
# (index on trace_rowid) as written. json_type names a string 'text' and a number 'integer' or 'real'.
_SQLITE_COUNT_SQL = """
WITH lane AS (
    SELECT json_extract(value, '$.lane_id') AS lane_id, json_extract(value, '$.project') AS project_name,
           json_extract(value, '$.module') AS module, json_extract(value, '$.since') AS since,
           json_extract(value, '$.min_confidence') AS min_confidence,
           json_extract(value, '$.answer_path') AS answer_path
    FROM json_each(:lanes)
),
canonical AS (
    SELECT json_extract(value, '$[0]') AS module, json_extract(value, '$[1]') AS label FROM json_each(:labels)
),
routing_span AS (
    SELECT lane.lane_id, lane.module, lane.min_confidence, span.id AS span_rowid,
           json_type(span.attributes, lane.answer_path) AS answer_type,
           json_extract(span.attributes, lane.answer_path) AS answer,
           json_type(span.attributes, :query_path) AS query_type,
           json_extract(span.attributes, :query_path) AS query,
           json_type(span.attributes, :confidence_path) AS confidence_type,
           json_extract(span.attributes, :confidence_path) AS confidence,
           json_type(span.attributes, :success_path) AS success_type
    FROM lane
    JOIN projects AS project ON project.name = lane.project_name
    JOIN traces AS trace ON trace.project_rowid = project.id
    JOIN spans AS span ON span.trace_rowid = trace.id
    WHERE span.name = :span_name
      AND json_extract(span.attributes, :module_path) = lane.module
      AND (lane.since IS NULL OR span.start_time >= lane.since)
)
SELECT routing_span.lane_id, count(*)
FROM routing_span
WHERE
    -- Contract, as in _COUNT_SQL.
    coalesce(routing_span.query_type = 'text', 0)
    AND trim(routing_span.query, ' ' || char(9, 10, 13)) <> ''
    AND length(routing_span.query) <= :max_query_chars
    AND (
        routing_span.answer_type IS NULL OR routing_span.answer_type = 'null'
        OR (routing_span.answer_type = 'text' AND EXISTS (
            SELECT 1 FROM canonical
            WHERE canonical.module = routing_span.module AND canonical.label = routing_span.answer))
    )
    AND (
        routing_span.confidence_type IS NULL OR routing_span.confidence_type = 'null'
        OR (routing_span.confidence_type IN ('integer', 'real') AND routing_span.confidence BETWEEN 0 AND 1)
    )
    AND NOT EXISTS (
        SELECT 1 FROM span_annotations AS annotation
        WHERE annotation.span_rowid = routing_span.span_rowid
          AND annotation.name = :feedback_name
          AND annotation.label IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM canonical
              WHERE canonical.module = routing_span.module AND canonical.label = annotation.label)
    )
    AND (
        EXISTS (
            SELECT 1 FROM span_annotations AS annotation
            JOIN canonical ON canonical.module = routing_span.module AND canonical.label = annotation.label
            WHERE annotation.span_rowid = routing_span.span_rowid
              AND annotation.name = :feedback_name
              AND annotation.annotator_kind IN (SELECT value FROM json_each(:annotator_kinds))
        )
        OR coalesce(
            routing_span.answer_type = 'text'
            AND routing_span.success_type = 'true'
            AND routing_span.confidence_type IN ('integer', 'real')
            AND routing_span.confidence >= routing_span.min_confidence,
            0
        )
    )
GROUP BY routing_span.lane_id
"""


# Ingestion's feedback read: one project, so plain joins down from it (indexes on project_rowid,
# trace_rowid and span_rowid).
_FEEDBACK_SQL = """
SELECT span.span_id, annotation.annotator_kind, annotation.label, annotation.score, annotation.identifier,
       annotation.updated_at
FROM projects AS project
JOIN traces AS trace ON trace.project_rowid = project.id
JOIN spans AS span ON span.trace_rowid = trace.id
JOIN span_annotations AS annotation ON annotation.span_rowid = span.id
WHERE project.name = %(project)s
  AND span.name = %(span_name)s
  AND span.attributes #>> %(module_path)s::text[] = %(module)s
  AND span.start_time >= %(start)s AND span.start_time < %(end)s
  AND annotation.name = %(feedback_name)s
ORDER BY span.id, annotation.id
"""

_SQLITE_FEEDBACK_SQL = """
SELECT span.span_id, annotation.annotator_kind, annotation.label, annotation.score, annotation.identifier,
       annotation.updated_at
FROM projects AS project
JOIN traces AS trace ON trace.project_rowid = project.id
JOIN spans AS span ON span.trace_rowid = trace.id
JOIN span_annotations AS annotation ON annotation.span_rowid = span.id
WHERE project.name = :project
  AND span.name = :span_name
  AND json_extract(span.attributes, :module_path) = :module
  AND span.start_time >= :start AND span.start_time < :end
  AND annotation.name = :feedback_name
ORDER BY span.id, annotation.id
"""


class PhoenixDatabase:
    """Reads from a Phoenix's database (Postgres or SQLite): exact labeled-span counts for many lanes
    (``count``) and a lane's feedback annotations (``feedback_annotations_between``).

    Counts what ``routing_traces`` ingestion (``cogniverse_assets.examples``) would keep as
    labeled, which the GraphQL count (``PhoenixResource._labeled_count``) can only approach. A span
    of the lane's module (``routing.module``, span name ``cogniverse.routing``) with
    ``start_time >= since`` counts when

    - it has a ``routing_feedback`` annotation of kind HUMAN or LLM whose label is canonical for
      the module, or its router answer is canonical, ``agent.success`` is true and its confidence
      is at least the lane's ``min_confidence``; and
    - ingestion would not quarantine it: no ``routing_feedback`` label outside the module's labels
      (of any annotator kind), a router answer that is canonical or absent, a non-blank query of
      at most ``MAX_QUERY_CHARS`` characters, a confidence in [0, 1] or absent.

    Stricter than the GraphQL count, so lower where they differ: a CODE annotator's label, a
    contradictory annotation, a non-canonical answer or a bad query count there and not here. Not
    checked (spans ingestion quarantines for them still count): list attributes, processing
    time, satisfaction and ``agent.success`` of another type than boolean. Blank means spaces,
    tabs and line breaks; Python's ``str.strip`` also strips other Unicode white space.
    """

    def __init__(self, database_url: str, project_prefix: str = tc.DEFAULT_PROJECT_PREFIX):
        self._url = database_url
        self.project_prefix = project_prefix
        self.statements = 0  # statements run so far (benchmarks report it)

    @property
    def redacted_url(self) -> str:
        """The database URL for messages and logs: its password masked."""
        return redact_url(self._url) or ""

    def count(
        self, requests: Mapping[str, LaneCountRequest], deadline: float | None = None
    ) -> dict[str, dict[str, int]]:
        """Per tenant and module, the labeled routing spans each ``LaneCountRequest`` asks for,
        ``LANES_PER_STATEMENT`` lanes (whole tenants) a statement. With a ``deadline``
        (``time.monotonic()``), no statement starts after it once one has run: tenants missing from
        the result were not counted. Raises ``PhoenixDatabaseUnavailable``."""
        counts: dict[str, dict[str, int]] = {}

        def count_in(connection: Connection) -> dict[str, dict[str, int]]:
            for index, lanes in enumerate(self._statements(requests)):
                if deadline is not None and index and time.monotonic() > deadline:
                    break
                counted = self._count_lanes(connection, lanes)
                for lane in lanes:
                    counts.setdefault(lane.tenant_id, {})[lane.module] = counted.get(lane, 0)
            return counts

        return self._read(COUNT_APPLICATION, "failed to count in", count_in)

    def feedback_annotations_between(
        self, tenant_id: str, module: str, start: datetime, end: datetime, timeout_s: float
    ) -> dict[str, list[dict]]:
        """What ``PhoenixResource.feedback_annotations_between`` reads through GraphQL, in one
        statement: the ``routing_feedback`` annotations (any annotator kind) of ``module``'s routing
        spans in the tenant's project with ``start <= start_time < end``, grouped by span id, each
        span's in the order they were written. Raises ``PhoenixDatabaseUnavailable``; the
        statement times out after ``timeout_s``."""
        sqlite = self._is_sqlite
        parameters = {
            "project": tc.project_name(tenant_id, self.project_prefix),
            "span_name": tc.SPAN_NAME,
            "module_path": _json_path(tc.MODULE) if sqlite else _path(tc.MODULE),
            "module": module,
            "start": _sqlite_time(start) if sqlite else start,
            "end": _sqlite_time(end) if sqlite else end,
            "feedback_name": tc.FEEDBACK_ANNOTATION,
        }

        def read_in(connection: Connection) -> list[tuple]:
            return self._fetch(connection, _SQLITE_FEEDBACK_SQL if sqlite else _FEEDBACK_SQL, parameters, timeout_s)

        grouped: dict[str, list[dict]] = {}
        for span_id, kind, label, score, identifier, updated_at in self._read(
            FEEDBACK_APPLICATION, "failed to read feedback from", read_in
        ):
            stamp = _utc(updated_at).isoformat() if updated_at is not None else None
            grouped.setdefault(span_id, []).append(feedback_record(span_id, kind, label, score, identifier, stamp))
        return grouped

    @property
    def _is_sqlite(self) -> bool:
        try:
            return urlsplit(self._url).scheme.lower() in SQLITE_SCHEMES
        except ValueError:
            return False

    def _read(self, application: str, failing: str, work: Callable[[Connection], Result]) -> Result:
        """``work`` on a read-only connection (on Postgres named ``application`` in
        ``pg_stat_activity``); any driver error becomes ``PhoenixDatabaseUnavailable``
        ("<failing> Phoenix's database ...")."""
        try:
            if self._is_sqlite:
                connection = sqlite3.connect(self._sqlite_uri(), uri=True, timeout=CONNECT_TIMEOUT_S)
            else:
                connection = psycopg2.connect(
                    self._dsn(), connect_timeout=CONNECT_TIMEOUT_S, application_name=application
                )
        except DRIVER_ERRORS as error:
            connection, failure = None, self._message("could not connect to", error)
        if connection is None:  # outside the except block: no traceback chain holding the driver's message
            raise PhoenixDatabaseUnavailable(failure)
        try:
            if not self._is_sqlite:
                connection.set_session(readonly=True)
            result = work(connection)
        except DRIVER_ERRORS as error:
            failure = self._message(failing, error)
        else:
            failure = None
        finally:
            connection.close()
        if failure:
            raise PhoenixDatabaseUnavailable(failure)
        return result

    def _statements(self, requests: Mapping[str, LaneCountRequest]) -> Iterator[list[Lane]]:
        """The lanes of ``requests`` in statements of about ``LANES_PER_STATEMENT``, a tenant's
        lanes always in one statement (so a tenant is counted entirely or not at all)."""
        batch: list[Lane] = []
        for tenant_id, request in requests.items():
            if batch and len(batch) + len(request.since) > LANES_PER_STATEMENT:
                yield batch
                batch = []
            project = tc.project_name(tenant_id, self.project_prefix)
            batch += [
                Lane(tenant_id, module, project, since, float(request.min_confidence))
                for module, since in request.since.items()
            ]
        if batch:
            yield batch

    def _count_lanes(self, connection: Connection, lanes: Sequence[Lane]) -> dict[Lane, int]:
        labels = [(module, label) for module in tc.MODULE_NAMES for label in tc.MODULE_LABELS[module]]
        if self._is_sqlite:
            return self._count_lanes_in_sqlite(connection, lanes, labels)
        parameters = {
            "lane_ids": list(range(len(lanes))),
            "projects": [lane.project for lane in lanes],
            "modules": [lane.module for lane in lanes],
            "since": [lane.since for lane in lanes],
            "min_confidence": [lane.min_confidence for lane in lanes],
            "decision_modules": list(tc.MODULE_DECISION_ATTRIBUTE),
            "decision_attributes": list(tc.MODULE_DECISION_ATTRIBUTE.values()),
            "label_modules": [module for module, _ in labels],
            "labels": [label for _, label in labels],
            "span_name": tc.SPAN_NAME,
            "module_path": _path(tc.MODULE),
            "query_path": _path(tc.QUERY),
            "confidence_path": _path(tc.CONFIDENCE),
            "success_path": _path(tc.AGENT_SUCCESS),
            "max_query_chars": tc.MAX_QUERY_CHARS,
            "feedback_name": tc.FEEDBACK_ANNOTATION,
            "annotator_kinds": list(tc.ANNOTATOR_KINDS),
        }
        # The per-lane subqueries look expensive to the planner, which would spend about 0.5 s
        # compiling them with JIT for a statement that runs in a fraction of that.
        rows = self._fetch(connection, _COUNT_SQL, parameters, STATEMENT_TIMEOUT_S, jit=False)
        return {lanes[lane_id]: int(count) for lane_id, count in rows}

    def _count_lanes_in_sqlite(
        self, connection: sqlite3.Connection, lanes: Sequence[Lane], labels: list[tuple[str, str]]
    ) -> dict[Lane, int]:
        lane_rows = [
            {
                "lane_id": lane_id,
                "project": lane.project,
                "module": lane.module,
                "since": _sqlite_time(lane.since),
                "min_confidence": lane.min_confidence,
                "answer_path": _json_path(tc.MODULE_DECISION_ATTRIBUTE[lane.module]),
            }
            for lane_id, lane in enumerate(lanes)
        ]
        parameters = {
            "lanes": json.dumps(lane_rows),
            "labels": json.dumps(labels),
            "span_name": tc.SPAN_NAME,
            "module_path": _json_path(tc.MODULE),
            "query_path": _json_path(tc.QUERY),
            "confidence_path": _json_path(tc.CONFIDENCE),
            "success_path": _json_path(tc.AGENT_SUCCESS),
            "max_query_chars": tc.MAX_QUERY_CHARS,
            "feedback_name": tc.FEEDBACK_ANNOTATION,
            "annotator_kinds": json.dumps(list(tc.ANNOTATOR_KINDS)),
        }
        rows = self._fetch(connection, _SQLITE_COUNT_SQL, parameters, STATEMENT_TIMEOUT_S)
        return {lanes[lane_id]: int(count) for lane_id, count in rows}

    def _fetch(
        self,
        connection: Connection,
        sql: str,
        parameters: Mapping[str, object],
        timeout_s: float,
        jit: bool = True,
    ) -> list[tuple]:
        """The rows of one statement, which times out after ``timeout_s``."""
        if isinstance(connection, sqlite3.Connection):
            return self._fetch_from_sqlite(connection, sql, parameters, timeout_s)
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            if not jit:
                cursor.execute("SET LOCAL jit = off")
            cursor.execute(sql, parameters)
            rows = cursor.fetchall()
        connection.rollback()  # read only: end the transaction, keep nothing open between statements
        self.statements += 1
        return rows

    def _fetch_from_sqlite(
        self, connection: sqlite3.Connection, sql: str, parameters: Mapping[str, object], timeout_s: float
    ) -> list[tuple]:
        # SQLite has no statement timeout: a progress handler that answers non-zero interrupts it.
        deadline = time.monotonic() + timeout_s
        connection.set_progress_handler(lambda: time.monotonic() > deadline, SQLITE_STEPS_PER_DEADLINE_CHECK)
        try:
            rows = connection.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as error:
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"canceling statement after its {timeout_s:g} s timeout") from error
            raise
        finally:
            connection.set_progress_handler(None, 0)
        self.statements += 1
        return rows

    def _sqlite_uri(self) -> str:
        """The ``file:`` URI that opens the SQLite database read-only."""
        parts = urlsplit(self._url)
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("//"):
            raise PhoenixDatabaseUnavailable(
                f"Phoenix database {self.redacted_url} is not sqlite:/// followed by an absolute path"
            )
        return f"file:{quote(path[1:])}?mode=ro"

    def _dsn(self) -> str:
        """The URL in the form psycopg2 takes (Phoenix's ``postgresql+asyncpg://`` included)."""
        try:
            parts = urlsplit(self._url)
            usable = parts.scheme.lower() in POSTGRES_SCHEMES and bool(parts.hostname)
        except ValueError:
            parts, usable = None, False
        if not usable:
            raise PhoenixDatabaseUnavailable(
                f"Phoenix database {self.redacted_url} is neither a Postgres URL with a host "
                f"({', '.join(s + '://' for s in POSTGRES_SCHEMES)}) nor sqlite:/// with an absolute path"
            )
        return urlunsplit(parts._replace(scheme="postgresql"))

    def _message(self, what: str, error: Exception) -> str:
        """``error`` in one line that names the database without its password."""
        text = redact_urls(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        try:
            password = urlsplit(self._url).password
        except ValueError:
            password = None
        if password:
            text = text.replace(password, REDACTED).replace(unquote(password), REDACTED)
        return f"{type(error).__name__}: {what} Phoenix's database {self.redacted_url}: {text}"
