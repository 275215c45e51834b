"""Phoenix access: the tenant's project, its routing spans and their feedback annotations."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator, Mapping
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import dagster as dg
import httpx
from phoenix.client import Client
from pydantic import Field

from cogniverse_resources import settings
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.redaction import has_userinfo, redact_url
from cogniverse_resources.stack import phoenix_url

# Phoenix rejects GraphQL queries with more aliased fields than this.
GRAPHQL_MAX_ALIASES = 50
PROJECTS_PER_PAGE = 1000
SPANS_PER_PAGE = 1000  # the most Phoenix's REST getSpans returns per page
# Annotated spans per GraphQL page of feedback_annotations_between: with a few annotations each, a
# page stays well under a megabyte.
FEEDBACK_SPANS_PER_PAGE = 1000


ALLOWED_HOSTS_VARIABLE = "COGNIVERSE_PHOENIX_ALLOWED_HOSTS"
API_KEY_ENV_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
USER_AGENT = "cogniverse-auto-optimization"  # sent with every request


class PhoenixUnavailable(RuntimeError):
    """Phoenix could not be reached; callers decide whether to retry or skip."""


class PhoenixEndpointRefused(PhoenixUnavailable):
    """A tenant's Phoenix endpoint this deployment will not call: credentials in the URL, a host
    outside ``COGNIVERSE_PHOENIX_ALLOWED_HOSTS``, or an unusable ``phoenix_api_key_env``. A
    ``PhoenixUnavailable``, so the sensor reports that tenant (and its lanes fail) while every
    other tenant goes on. The message never holds a credential."""


@dataclass(frozen=True)
class LaneCountRequest:
    """What to count for one tenant: per module, its labeled routing spans since ``since[module]``
    (``None``: all of them); a span without feedback counts as labeled when its answer succeeded
    with confidence >= ``min_confidence`` (the tenant's ``min_trace_confidence``)."""

    since: Mapping[str, datetime | None]
    min_confidence: float


class PhoenixResource(dg.ConfigurableResource):
    """A Phoenix server (embedded ``phoenix serve`` locally, a shared deployment in production)."""

    # The embedded default is the stack's Phoenix (``PHOENIX_PORT``), looked up when the resource is built.
    endpoint: str = Field(default_factory=lambda: phoenix_url(), description="Phoenix base URL")
    project_prefix: str = Field(default=tc.DEFAULT_PROJECT_PREFIX, description="Project name = prefix + tenant id")
    api_key: str | None = Field(default=None, description="Phoenix API key (sent to this endpoint only)")
    allowed_hosts: str | None = Field(
        default=None,
        description="Hosts a tenant's own phoenix_endpoint may name: comma-separated host names or *.suffix "
        "('*': any). Unset: any http(s) host.",
    )
    timeout_s: int = 30
    count_concurrency: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Exact-count requests the sensor keeps in flight at once. 1 suits Phoenix on SQLite "
        "(it runs them one at a time anyway); a Phoenix on Postgres answers several side by side.",
    )
    read_database_url: str | None = Field(
        default=None,
        description="This Phoenix's own database: a postgresql:// URL (a read-only user will do), or "
        "sqlite:/// and the absolute path of its SQLite file on this machine (opened read-only). The sensor "
        "then counts every lane exactly in one SQL statement, and ingestion reads a lane's feedback in one "
        "statement, instead of GraphQL (cogniverse_resources.phoenix_database). Unset: GraphQL; `cogniverse "
        "stack up`, `make run` and `make demo` set it to the database of the Phoenix they start. Never used "
        "for a tenant's own phoenix_endpoint.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "PhoenixResource":
        """The Phoenix the environment names (``settings.RESOURCE_ENV``); ``overrides`` win."""
        return settings.from_env(cls, environ, **overrides)

    def for_tenant(
        self, phoenix_endpoint: str | None, api_key_env: str | None = None, environ: Mapping[str, str] | None = None
    ) -> "PhoenixResource":
        """This Phoenix, or the tenant's own one when its config names an endpoint
        (``RoutingConfig.phoenix_endpoint``, ``phoenix_api_key_env``).

        A tenant's Phoenix gets the key held by the environment variable ``api_key_env`` and no
        other: never this Phoenix's ``api_key``. Raises ``PhoenixEndpointRefused`` for an endpoint
        with credentials in it or on a host outside ``allowed_hosts``, and for a key variable that
        is unset, badly named, one of the deployment's own settings or holds the shared key.
        """
        if not phoenix_endpoint or _same_endpoint(phoenix_endpoint, self.endpoint):
            return self
        shown = redact_url(phoenix_endpoint)
        if has_userinfo(phoenix_endpoint):
            raise PhoenixEndpointRefused(
                f"tenant Phoenix endpoint {shown} carries credentials in its URL; refused. Put the key in an "
                "environment variable and name it in the tenant's phoenix_api_key_env"
            )
        try:
            parts = urlsplit(phoenix_endpoint)
            host = (parts.hostname or "").lower()
        except ValueError:
            parts, host = None, ""
        if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
            raise PhoenixEndpointRefused(f"tenant Phoenix endpoint {shown} is not an http(s) URL with a host; refused")
        if not host_allowed(host, self.allowed_hosts):
            raise PhoenixEndpointRefused(
                f"tenant Phoenix endpoint {shown}: host {host!r} is not allowed by {ALLOWED_HOSTS_VARIABLE} "
                f"({self.allowed_hosts}); refused"
            )
        # No read_database_url: that database is the shared Phoenix's, not the tenant's.
        return PhoenixResource(
            endpoint=phoenix_endpoint,
            project_prefix=self.project_prefix,
            api_key=self._tenant_api_key(api_key_env, shown, os.environ if environ is None else environ),
            allowed_hosts=self.allowed_hosts,
            timeout_s=self.timeout_s,
            count_concurrency=self.count_concurrency,
        )

    def _tenant_api_key(self, api_key_env: str | None, shown: str, environ: Mapping[str, str]) -> str | None:
        """The value of the tenant's key variable (``None``: the tenant's Phoenix gets no key)."""
        if not api_key_env:
            return None
        if not API_KEY_ENV_PATTERN.fullmatch(api_key_env):
            raise PhoenixEndpointRefused(
                f"phoenix_api_key_env {api_key_env!r} is not an environment variable name "
                f"({API_KEY_ENV_PATTERN.pattern})"
            )
        own = {
            variable for fields in settings.RESOURCE_ENV.values() for s in fields.values() for variable in s.variables
        }
        if api_key_env in own:
            raise PhoenixEndpointRefused(
                f"phoenix_api_key_env {api_key_env} names one of this deployment's own settings; refused for {shown}"
            )
        key = environ.get(api_key_env)
        if not key:
            raise PhoenixEndpointRefused(
                f"the environment variable {api_key_env} (phoenix_api_key_env of the tenant's Phoenix {shown}) "
                "is not set"
            )
        if self.api_key and key == self.api_key:
            raise PhoenixEndpointRefused(
                f"{api_key_env} holds the shared Phoenix key, which is never sent to a tenant's Phoenix ({shown})"
            )
        return key

    @property
    def redacted_endpoint(self) -> str:
        """``endpoint`` for messages, metadata and logs: any ``user:password@`` masked."""
        return redact_url(self.endpoint)

    def request_headers(self) -> dict[str, str]:
        """The headers of every request to this Phoenix: its own credentials and nothing taken from
        the environment. (``phoenix.otel``'s exporter adds ``PHOENIX_API_KEY`` from the environment
        to any header set without ``authorization``: a span exporter for a tenant's Phoenix must not
        be built through it with these headers alone.)"""
        headers = {"user-agent": USER_AGENT}
        parts = urlsplit(self.endpoint)
        if parts.username is not None or parts.password is not None:  # httpx's precedence: URL userinfo wins
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            headers["authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        elif self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def client(self) -> Client:
        # An explicit HTTP client: given only a base URL, the Phoenix client would add PHOENIX_API_KEY,
        # PHOENIX_CLIENT_HEADERS or a .env.phoenix file's key to every request, whatever the host.
        http = _ClosingClient(base_url=self._base_url(), headers=self.request_headers(), timeout=CLIENT_TIMEOUT)
        return Client(http_client=http)

    def project_name(self, tenant_id: str) -> str:
        return tc.project_name(tenant_id, self.project_prefix)

    def healthy(self) -> bool:
        try:
            return httpx.get(self._url("healthz"), timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_project(self, tenant_id: str) -> None:
        """Create the tenant's project if missing (spans create it too; this makes it visible early)."""
        client = self.client()
        name = self.project_name(tenant_id)
        existing = {project["name"] for project in client.projects.list()}
        if name not in existing:
            client.projects.create(name=name, description=f"Cogniverse routing spans of tenant {tenant_id}")

    def log_evaluation(
        self, tenant_id: str, module: str, queries: list[str], labels: list[str], answers: Mapping[str, list[str]]
    ) -> dict[str, str]:
        """The validation split as a (versioned) Phoenix dataset, and one experiment per scored
        module (``answers``: role → its answers in split order). Returns each experiment's URL."""
        client = self.client()
        name = f"{self.project_name(tenant_id)}-{module}-validation"
        rows = [{"input": {"query": query}, "output": {"label": label}} for query, label in zip(queries, labels)]
        if name in {dataset["name"] for dataset in client.datasets.list()}:
            dataset = client.datasets.get_dataset(dataset=name)
            known = {example["input"]["query"] for example in dataset.examples}
            fresh = [row for row in rows if row["input"]["query"] not in known]
            if fresh:
                dataset = client.datasets.add_examples_to_dataset(dataset=name, examples=fresh)
        else:
            dataset = client.datasets.create_dataset(
                name=name, examples=rows, dataset_description=f"{tenant_id} {module} real validation split"
            )
        urls = {}
        for role, predicted in answers.items():
            by_query = dict(zip(queries, predicted))
            experiment = client.experiments.run_experiment(
                dataset=dataset,
                task=lambda input, by_query=by_query: {"label": by_query.get(input["query"])},
                evaluators={"exact_match": lambda output, expected: float(output["label"] == expected["label"])},
                experiment_name=f"{module}-{role}",
                experiment_metadata={"tenant": tenant_id, "module": module, "role": role},
                print_summary=False,
            )
            urls[role] = (
                f"{self._base_url(redacted=True)}/datasets/{experiment['dataset_id']}/compare"
                f"?experimentId={experiment['experiment_id']}"
            )
        return urls

    def wait_for_spans(self, tenant_id: str, span_ids: Iterable[str], timeout_s: float = 60.0) -> None:
        """Block until Phoenix has ingested every span in ``span_ids`` (ingestion is asynchronous)."""
        pending = list(dict.fromkeys(span_ids))
        client = self.client()
        deadline = time.monotonic() + timeout_s
        while pending:
            batch = pending[:100]
            try:
                found = client.spans.get_spans(
                    project_identifier=self.project_name(tenant_id), span_ids=batch, limit=len(batch)
                )
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 404:  # 404: the project itself is not ingested yet
                    raise
                found = []
            seen = {span["context"]["span_id"] for span in found}
            pending = [span_id for span_id in pending if span_id not in seen]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise PhoenixUnavailable(f"Phoenix did not ingest {len(pending)} spans within {timeout_s:.0f}s")
            time.sleep(0.5)

    # ------------------------------------------------------------------ reading routing spans

    def iter_routing_spans(
        self, tenant_id: str, module: str, start: datetime, end: datetime, page_size: int = SPANS_PER_PAGE
    ) -> Iterator[list[dict]]:
        """Yield pages of ``module``'s ``cogniverse.routing`` spans with ``start <= start_time < end``,
        newest first; memory holds one page.

        Uses Phoenix's REST ``getSpans`` (the endpoint the client's ``get_spans`` wraps): it filters
        server-side by span name and ``routing.module`` and pages by cursor. The client asks for
        100 spans a page and returns them all at once; every page costs Phoenix one filtered,
        sorted query, so pages of 1,000 read about twice as fast (docs/benchmarks.md).
        """
        url = self._url(f"v1/projects/{quote(self.project_name(tenant_id), safe='')}/spans")
        params = {
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
            "name": tc.SPAN_NAME,
            "attribute": f"{tc.MODULE}:{json.dumps(module)}",  # JSON-quoted: always matched as a string
            "limit": page_size,
        }
        with httpx.Client(headers=self.request_headers(), timeout=self.timeout_s) as http:
            cursor = None
            while True:
                response = http.get(url, params={**params, "cursor": cursor} if cursor else params)
                if response.status_code == 404:  # no project yet: no spans
                    return
                response.raise_for_status()
                payload = response.json()
                if payload["data"]:
                    yield payload["data"]
                cursor = payload.get("next_cursor")
                if not cursor or not payload["data"]:
                    return

    def feedback_annotations(self, tenant_id: str, span_ids: Iterable[str], batch: int = 100) -> dict[str, list[dict]]:
        """``routing_feedback`` annotations of the given spans, grouped by span id."""
        client = self.client()
        project = self.project_name(tenant_id)
        ids = list(dict.fromkeys(span_ids))
        grouped: dict[str, list[dict]] = {}
        for start in range(0, len(ids), batch):
            annotations = client.spans.get_span_annotations(
                span_ids=ids[start : start + batch],
                project_identifier=project,
                include_annotation_names=[tc.FEEDBACK_ANNOTATION],
                limit=10_000,
                timeout=self.timeout_s,
            )
            for annotation in annotations:
                grouped.setdefault(annotation["span_id"], []).append(dict(annotation))
        return grouped

    def feedback_annotations_between(
        self, tenant_id: str, module: str, start: datetime, end: datetime, page_size: int = FEEDBACK_SPANS_PER_PAGE
    ) -> dict[str, list[dict]]:
        """``routing_feedback`` annotations of ``module``'s routing spans with ``start <= start_time
        < end``, grouped by span id, in the keys of ``feedback_annotations``: ``span_id``, ``name``,
        ``annotator_kind``, ``result`` (``label``, ``score``), ``identifier``, ``updated_at``.

        Phoenix's REST ``span_annotations`` only looks annotations up by span id, at most 1,000 ids
        a request, so reading them for every span read costs a request per page whatever few are
        annotated. Its GraphQL ``spans`` takes a time range and a filter instead: this pages through
        the annotated spans alone (``annotations[...]`` is the filter's existence check), in span
        row order by cursor, ``page_size`` spans with their annotations a request.
        """
        condition = (
            f"name == {json.dumps(tc.SPAN_NAME)} and {tc.MODULE} == {json.dumps(module)} "
            f"and annotations[{json.dumps(tc.FEEDBACK_ANNOTATION)}]"
        )
        variables = {
            "project": self.project_name(tenant_id),
            "first": page_size,
            "condition": condition,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "after": None,
        }
        grouped: dict[str, list[dict]] = {}
        while True:
            project = self._graphql(_FEEDBACK_QUERY, variables, "the feedback query").get("getProjectByName")
            if not project:  # no project yet: nothing annotated
                return grouped
            spans = project["spans"]
            for edge in spans["edges"]:
                span_id = edge["node"]["spanId"]
                grouped[span_id] = [
                    feedback_record(
                        span_id,
                        annotation["annotatorKind"],
                        annotation["label"],
                        annotation["score"],
                        annotation["identifier"],
                        annotation["updatedAt"],
                    )
                    for annotation in edge["node"]["spanAnnotations"]
                ]
            if not spans["pageInfo"]["hasNextPage"]:
                return grouped
            variables["after"] = spans["pageInfo"]["endCursor"]

    # ------------------------------------------------------------------ counting for sensors

    def count_labeled_routing_spans_many(
        self, requests: Mapping[str, LaneCountRequest], deadline: float | None = None
    ) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
        """Per tenant and module, the labeled routing spans each ``LaneCountRequest`` asks for:
        ``{tenant: request}`` → (counts per tenant and module, error per tenant whose request failed).

        One aliased ``recordCount`` per tenant × module through GraphQL (the Phoenix client has no
        count API), as many tenants per request as Phoenix's ``GRAPHQL_MAX_ALIASES`` allows. Each
        count has its own start time, so Phoenix cannot share work between them: this is the
        expensive count, for the lanes a cheaper bound could not decide. A failed request costs
        only its own tenants. With a ``deadline`` (``time.monotonic()``), no request starts after
        it once one has been made: tenants in neither result were not counted. Requests go out
        ``count_concurrency`` at a time, in tenant order, and the deadline is checked between waves.
        """
        counts: dict[str, dict[str, int]] = {}
        errors: dict[str, str] = {}
        tenants = list(requests)
        modules = max((len(request.since) for request in requests.values()), default=1)
        per_request = max(1, GRAPHQL_MAX_ALIASES // (modules + 1))  # + 1: the project lookup's alias
        chunks = [
            {tenant: requests[tenant] for tenant in tenants[start : start + per_request]}
            for start in range(0, len(tenants), per_request)
        ]

        def count(chunk: dict[str, LaneCountRequest]) -> None:
            try:
                counts.update(self._count_chunk(chunk))
            except PhoenixUnavailable as error:
                errors.update({tenant: str(error) for tenant in chunk})

        with ThreadPoolExecutor(max_workers=self.count_concurrency, thread_name_prefix="phoenix-count") as pool:
            for wave in range(0, len(chunks), self.count_concurrency):
                if deadline is not None and wave and time.monotonic() > deadline:
                    break
                list(pool.map(count, chunks[wave : wave + self.count_concurrency]))
        return counts, errors

    def count_labeled_routing_spans_since(
        self, tenant_ids: Iterable[str], modules: Iterable[str], since: datetime | None, min_trace_confidence: float
    ) -> dict[str, dict[str, int]]:
        """Per tenant and module, the labeled routing spans since one moment shared by all tenants.

        Counts that share a time range and a filter are one SQL query in Phoenix whatever the
        number of projects, so this reads the tenant projects a page of ``PROJECTS_PER_PAGE`` at a
        time and the cost barely grows with the number of tenants: the sensor's cheap first stage.
        Raises ``PhoenixUnavailable``.
        """
        wanted = {self.project_name(tenant_id): tenant_id for tenant_id in tenant_ids}
        modules = list(modules)
        fields = " ".join(
            self._labeled_count(f"m{index}", module, since, min_trace_confidence)
            for index, module in enumerate(modules)
        )
        query = (
            "query($prefix: String!, $after: String) { "
            "projects(first: %d, after: $after, filter: {col: name, value: $prefix}) "
            "{ pageInfo { hasNextPage endCursor } edges { node { name %s } } } }" % (PROJECTS_PER_PAGE, fields)
        )
        # No project yet: the tenant has emitted nothing.
        counts = {tenant_id: dict.fromkeys(modules, 0) for tenant_id in wanted.values()}
        after = None
        while wanted:
            page = self._graphql(query, {"prefix": self.project_prefix, "after": after})["projects"]
            for edge in page["edges"]:
                tenant_id = wanted.get(edge["node"]["name"])
                if tenant_id is not None:
                    counts[tenant_id] = {module: int(edge["node"][f"m{index}"]) for index, module in enumerate(modules)}
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        return counts

    @staticmethod
    def _labeled_count(alias: str, module: str, since: datetime | None, min_confidence: float) -> str:
        """The GraphQL field counting ``module``'s labeled routing spans since ``since``.

        Follows ingestion's label rules (``cogniverse_assets.examples.choose_label``) as far as
        Phoenix's span filter language can: a span counts when it has a ``routing_feedback``
        annotation whose label is canonical for the module, or when the router's answer (the
        module's decision attribute) is canonical, the agent succeeded and the confidence is at
        least ``min_confidence``. What the filter cannot say, so the count may be a little higher
        than the labeled examples ingestion keeps:

        - the annotator kind: the filter language exposes an annotation's label, score,
          explanation and identifier but not its ``annotator_kind``, so a canonical label from a
          CODE annotator counts although ingestion only takes HUMAN and LLM annotations;
        - "every annotation is canonical": a span with one canonical and one non-canonical
          annotation counts, while ingestion quarantines it (a contradictory annotation);
        - the rest of the span contract (query present and short enough, attribute types):
          spans that break it count here and are quarantined by ingestion.
        """
        labels = "[" + ", ".join(json.dumps(label) for label in tc.MODULE_LABELS[module]) + "]"
        condition = (
            f'name == "{tc.SPAN_NAME}" and {tc.MODULE} == "{module}" and '
            f"(annotations['{tc.FEEDBACK_ANNOTATION}'].label in {labels} or "
            f"({tc.MODULE_DECISION_ATTRIBUTE[module]} in {labels} and {tc.AGENT_SUCCESS} == True "
            f"and {tc.CONFIDENCE} >= {float(min_confidence)}))"
        )
        time_range = f"timeRange: {{start: {json.dumps(since.isoformat())}}}, " if since else ""
        return f"{alias}: recordCount({time_range}filterCondition: {json.dumps(condition)})"

    def _headers(self) -> dict[str, str]:
        return self.request_headers()

    def _base_url(self, redacted: bool = False) -> str:
        """``endpoint`` without its userinfo (sent as a header instead, so no URL in an httpx error
        carries it) and without a trailing slash."""
        if redacted or has_userinfo(self.endpoint):
            parts = urlsplit(self.endpoint)
            return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/")
        return self.endpoint.rstrip("/")

    def _url(self, path: str) -> str:
        return f"{self._base_url()}/{path}"

    def _graphql(self, query: str, variables: Mapping[str, object], what: str = "the count query") -> dict:
        try:
            response = httpx.post(
                self._url("graphql"),
                json={"query": query, "variables": variables},
                headers=self._headers(),
                timeout=self.timeout_s,
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise PhoenixUnavailable(
                f"Phoenix at {self.redacted_endpoint} is unreachable: {type(error).__name__}"
            ) from error
        payload = response.json()
        if payload.get("errors"):
            raise PhoenixUnavailable(f"Phoenix rejected {what}: {payload['errors'][0].get('message')}")
        return payload.get("data") or {}

    def _count_chunk(self, requests: Mapping[str, LaneCountRequest]) -> dict[str, dict[str, int]]:
        projects, variables = [], {}
        for t_index, (tenant_id, request) in enumerate(requests.items()):
            fields = [
                self._labeled_count(f"m{m_index}", module, moment, request.min_confidence)
                for m_index, (module, moment) in enumerate(request.since.items())
            ]
            variables[f"p{t_index}"] = self.project_name(tenant_id)
            projects.append(f"t{t_index}: getProjectByName(name: $p{t_index}) {{ {' '.join(fields)} }}")
        declarations = ", ".join(f"${name}: String!" for name in variables)
        data = self._graphql(f"query({declarations}) {{ {' '.join(projects)} }}", variables)
        counts = {}
        for t_index, (tenant_id, request) in enumerate(requests.items()):
            project = data.get(f"t{t_index}")
            # No project: the tenant has not emitted anything yet.
            counts[tenant_id] = {
                module: int(project[f"m{m_index}"]) if project else 0 for m_index, module in enumerate(request.since)
            }
        return counts


_FEEDBACK_QUERY = f"""query($project: String!, $first: Int!, $after: String, $condition: String!,
  $start: DateTime!, $end: DateTime!) {{
  getProjectByName(name: $project) {{
    spans(first: $first, after: $after, filterCondition: $condition, timeRange: {{start: $start, end: $end}}) {{
      pageInfo {{ hasNextPage endCursor }}
      edges {{ node {{ spanId spanAnnotations(filter: {{include: {{names: [{json.dumps(tc.FEEDBACK_ANNOTATION)}]}}}}) {{
        annotatorKind label score identifier updatedAt
      }} }} }}
    }}
  }}
}}"""


def feedback_record(
    span_id: str,
    annotator_kind: str,
    label: str | None,
    score: float | None,
    identifier: str,
    updated_at: str | None,
) -> dict:
    """A ``routing_feedback`` annotation in the keys of the REST ``span_annotations`` endpoint,
    limited to what labeling reads (``examples.choose_label``): each GraphQL field is resolved on
    its own, about 0.1 s per field per 1,000 annotations on 2 cores (docs/benchmarks.md).
    ``updated_at`` is an ISO time in UTC, as GraphQL gives it: labeling compares these strings."""
    return {
        "span_id": span_id,
        "name": tc.FEEDBACK_ANNOTATION,
        "annotator_kind": annotator_kind,
        "result": {"label": label, "score": score},
        "identifier": identifier,
        "updated_at": updated_at,
    }


CLIENT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=10.0, pool=10.0)  # the Phoenix client's default


class _ClosingClient(httpx.Client):
    """The Phoenix client's own HTTP client closes itself when dropped; so does ours."""

    def __del__(self) -> None:
        try:
            self.close()
        except BaseException:
            pass


def _same_endpoint(first: str, second: str) -> bool:
    """Whether two base URLs name the same Phoenix (case of scheme and host, trailing slash ignored)."""

    def normal(url: str) -> tuple[str, str, str]:
        parts = urlsplit(url.strip())
        return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")

    try:
        return normal(first) == normal(second)
    except ValueError:
        return False


def host_allowed(host: str, allowed_hosts: str | None) -> bool:
    """Whether ``host`` matches ``allowed_hosts`` (comma-separated names or ``*.suffix``, ``*``: any;
    unset or blank: every host). ``*.example.com`` matches ``a.example.com``, not ``example.com``."""
    entries = [entry.strip().lower().strip("[]").rstrip(".") for entry in (allowed_hosts or "").split(",")]
    entries = [entry for entry in entries if entry]
    if not entries:
        return True
    host = host.lower().strip("[]").rstrip(".")
    for entry in entries:
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return True
    return False
