"""Phoenix access: the tenant's project, its routing spans and their feedback annotations."""

from __future__ import annotations

import os
import time
from typing import Iterable

import dagster as dg
import httpx
from phoenix.client import Client
from pydantic import Field

from cogniverse_resources import trace_contract as tc
from cogniverse_resources.stack import phoenix_url


def default_phoenix_endpoint() -> str:
    return os.environ.get("PHOENIX_ENDPOINT") or os.environ.get("PHOENIX_COLLECTOR_ENDPOINT") or phoenix_url()


class PhoenixUnavailable(RuntimeError):
    """Phoenix could not be reached; callers decide whether to retry or skip."""


class PhoenixResource(dg.ConfigurableResource):
    """A Phoenix server (embedded ``phoenix serve`` locally, a shared deployment in production)."""

    endpoint: str = Field(default_factory=default_phoenix_endpoint, description="Phoenix base URL")
    project_prefix: str = Field(default_factory=tc.project_prefix, description="Project name = prefix + tenant id")
    api_key: str | None = Field(default_factory=lambda: os.environ.get("PHOENIX_API_KEY"), description="Phoenix API key")
    timeout_s: int = 30

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
