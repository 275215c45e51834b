"""Artifact storage: per tenant × module tables (Parquet) and files, on a local folder by default
or ``s3://`` / ``gs://`` in production (``COGNIVERSE_ARTIFACTS_URL``, via universal-pathlib).

Every write is atomic: a local write goes to a temp file that is renamed into place; an object
store PUT is atomic by itself. A crash mid-write therefore never leaves a half-written table.
"""

from __future__ import annotations

import io
import os
import uuid

import dagster as dg
import pandas as pd
from pydantic import Field
from upath import UPath

from cogniverse_resources.paths import data_dir
from cogniverse_resources.tenant import validate_tenant_id


def default_artifacts_root() -> str:
    return os.environ.get("COGNIVERSE_ARTIFACTS_URL") or str(data_dir() / "artifacts")


def write_bytes_atomic(path: UPath, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.protocol in ("", "file", "local"):
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp.path, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp.path, path.path)
    else:
        path.write_bytes(payload)


class ArtifactStore(dg.ConfigurableResource):
    """Root folder/bucket for everything the pipeline produces, laid out ``<tenant>/<module>/...``."""

    root: str = Field(default_factory=default_artifacts_root, description="local path, s3://bucket/prefix or gs://bucket/prefix")

    def path(self, tenant_id: str, *parts: str) -> UPath:
        for part in parts:
            if not part or "/" in part or part in (".", ".."):
                raise ValueError(f"unsafe artifact path segment {part!r}")
        return UPath(self.root).joinpath(validate_tenant_id(tenant_id), *parts)

    def read_table(self, tenant_id: str, module: str, name: str) -> pd.DataFrame | None:
        path = self.path(tenant_id, module, f"{name}.parquet")
        if not path.exists():
            return None
        with path.open("rb") as handle:
            return pd.read_parquet(handle)

    def write_table(self, tenant_id: str, module: str, name: str, frame: pd.DataFrame) -> str:
        path = self.path(tenant_id, module, f"{name}.parquet")
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        write_bytes_atomic(path, buffer.getvalue())
        return str(path)
