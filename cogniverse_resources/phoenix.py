"""Phoenix access: the tenant's project, its routing spans and their feedback annotations."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator, Mapping
from urllib.parse import quote

import dagster as dg
import httpx
from phoenix.client import Client
from pydantic import Field

from cogniverse_resources import settings
from cogniverse_resources import trace_contract as tc
from cogniverse_resources.stack import phoenix_url


# Phoenix rejects GraphQL queries with more aliased fields than this.
GRAPHQL_MAX_ALIASES = 50
PROJECTS_PER_PAGE = 1000
SPANS_PER_PAGE = 1000  # the most Phoenix's REST getSpans returns per page


class PhoenixUnavailable(RuntimeError):
    """Phoenix could not be reached; callers decide whether to retry or skip."""


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
    api_key: str | None = Field(default=None, description="Phoenix API key")
    timeout_s: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "PhoenixResource":
        """The Phoenix the environment names (``settings.RESOURCE_ENV``); ``overrides`` win."""
        return settings.from_env(cls, environ, **overrides)

    def for_tenant(self, phoenix_endpoint: str | None) -> "PhoenixResource":
        """This Phoenix, or the tenant's own one when its config names an endpoint."""
        if not phoenix_endpoint or phoenix_endpoint == self.endpoint:
            return self
        return PhoenixResource(endpoint=phoenix_endpoint, project_prefix=self.project_prefix, api_key=self.api_key, timeout_s=self.timeout_s)

    def client(self) -> Client:
        return Client(base_url=self.endpoint, api_key=self.api_key)

    def project_name(self, tenant_id: str) -> str:
        return tc.project_name(tenant_id, self.project_prefix)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.endpoint.rstrip('/')}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def ensure_project(self, tenant_id: str) -> None:
        """Create the tenant's project if missing (spans create it too; this makes it visible early)."""
        client = self.client()
        name = self.project_name(tenant_id)
        existing = {project["name"] for project in client.projects.list()}
        if name not in existing:
            client.projects.create(name=name, description=f"Cogniverse routing spans of tenant {tenant_id}")

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
        url = f"{self.endpoint.rstrip('/')}/v1/projects/{quote(self.project_name(tenant_id), safe='')}/spans"
        params = {
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
            "name": tc.SPAN_NAME,
            "attribute": f"{tc.MODULE}:{json.dumps(module)}",  # JSON-quoted: always matched as a string
            "limit": page_size,
        }
        with httpx.Client(headers=self._headers(), timeout=self.timeout_s) as http:
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
        it once one has been made: tenants in neither result were not counted.
        """
        counts: dict[str, dict[str, int]] = {}
        errors: dict[str, str] = {}
        tenants = list(requests)
        modules = max((len(request.since) for request in requests.values()), default=1)
        per_request = max(1, GRAPHQL_MAX_ALIASES // (modules + 1))  # + 1: the project lookup's alias
        for start in range(0, len(tenants), per_request):
            if deadline is not None and start and time.monotonic() > deadline:
                break
            chunk = {tenant: requests[tenant] for tenant in tenants[start : start + per_request]}
            try:
                counts.update(self._count_chunk(chunk))
            except PhoenixUnavailable as error:
                errors.update({tenant: str(error) for tenant in chunk})
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
        """The GraphQL field counting ``module``'s labeled routing spans since ``since``."""
        # Mirrors examples.choose_label: an annotation, or a successful answer above the threshold.
        condition = (
            f'name == "{tc.SPAN_NAME}" and {tc.MODULE} == "{module}" and '
            f"(annotations['{tc.FEEDBACK_ANNOTATION}'].label is not None or "
            f"({tc.AGENT_SUCCESS} == True and {tc.CONFIDENCE} >= {float(min_confidence)}))"
        )
        time_range = f"timeRange: {{start: {json.dumps(since.isoformat())}}}, " if since else ""
        return f"{alias}: recordCount({time_range}filterCondition: {json.dumps(condition)})"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _graphql(self, query: str, variables: Mapping[str, object]) -> dict:
        try:
            response = httpx.post(
                f"{self.endpoint.rstrip('/')}/graphql", json={"query": query, "variables": variables}, headers=self._headers(), timeout=self.timeout_s
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise PhoenixUnavailable(f"Phoenix at {self.endpoint} is unreachable: {type(error).__name__}") from error
        payload = response.json()
        if payload.get("errors"):
            raise PhoenixUnavailable(f"Phoenix rejected the count query: {payload['errors'][0].get('message')}")
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
