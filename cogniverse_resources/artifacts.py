"""Artifact storage: per tenant × module tables (Parquet) and files, on a local folder by default
or ``s3://`` / ``gs://`` in production (``COGNIVERSE_ARTIFACTS_URL``, via universal-pathlib).

Every write is atomic: a local write goes to a temp file that is renamed into place; an object
store PUT is atomic by itself. A crash mid-write therefore never leaves a half-written table.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Mapping

import dagster as dg
import pandas as pd
from pydantic import Field
from upath import UPath

from cogniverse_resources import settings
from cogniverse_resources.paths import data_dir
from cogniverse_resources.tenant import validate_tenant_id


def local_artifacts_root() -> str:
    """The embedded default: ``artifacts`` in the data folder (``COGNIVERSE_DATA_DIR``, read now)."""
    return str(data_dir() / "artifacts")


def write_bytes_atomic(path: UPath, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.protocol in ("", "file", "local"):
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp.path, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp.path, path.path)
        except BaseException:
            Path(tmp.path).unlink(missing_ok=True)
            raise
    else:
        path.write_bytes(payload)


def _check_segments(parts: tuple[str, ...]) -> None:
    for part in parts:
        if not part or "/" in part or part in (".", ".."):
            raise ValueError(f"unsafe artifact path segment {part!r}")


class ArtifactStore(dg.ConfigurableResource):
    """Root folder/bucket for everything the pipeline produces, laid out ``<tenant>/<module>/...``."""

    root: str = Field(
        default_factory=local_artifacts_root, description="local path, s3://bucket/prefix or gs://bucket/prefix"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ArtifactStore":
        """The store the environment names (``settings.RESOURCE_ENV``); ``overrides`` win."""
        return settings.from_env(cls, environ, **overrides)

    def path(self, tenant_id: str, *parts: str) -> UPath:
        _check_segments(parts)
        return UPath(self.root).joinpath(validate_tenant_id(tenant_id), *parts)

    def global_path(self, *parts: str) -> UPath:
        """Cross-tenant artifacts (optimization history, meta-model) under ``<root>/_global``.

        ``_global`` can never collide with a tenant: tenant ids cannot start with ``_``.
        """
        _check_segments(parts)
        return UPath(self.root).joinpath("_global", *parts)

    def read_json(self, path: UPath) -> dict | None:
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def write_json(self, path: UPath, payload: dict) -> str:
        write_bytes_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())
        return str(path)

    def read_table(self, tenant_id: str, module: str, name: str) -> pd.DataFrame | None:
        return _read_frame(self.path(tenant_id, module, f"{name}.parquet"))

    def write_table(self, tenant_id: str, module: str, name: str, frame: pd.DataFrame) -> str:
        return _write_frame(self.path(tenant_id, module, f"{name}.parquet"), frame)

    def read_global_table(self, name: str) -> pd.DataFrame | None:
        return _read_frame(self.global_path(f"{name}.parquet"))

    def write_global_table(self, name: str, frame: pd.DataFrame) -> str:
        return _write_frame(self.global_path(f"{name}.parquet"), frame)


def _read_frame(path: UPath) -> pd.DataFrame | None:
    if not path.exists():
        return None
    with path.open("rb") as handle:
        return pd.read_parquet(handle)


def _write_frame(path: UPath, frame: pd.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes_atomic(path, buffer.getvalue())
    return str(path)


class DSPyModuleIOManager(dg.ConfigurableIOManager):
    """Stores compiled DSPy modules as JSON (never pickle), every version kept.

    ``<root>/<tenant>/<module>/modules/<version>.json`` plus ``candidate.json`` naming the newest
    version; both written atomically, the pointer last, so a crash never exposes a partial module.
    Values are JSON payloads (``{"state": program.dump_state(), ...}``); the routing-module registry
    turns them back into programs.
    """

    root: str = Field(default_factory=local_artifacts_root)

    def _store(self) -> ArtifactStore:
        return ArtifactStore(root=self.root)

    def _module_dir(self, context) -> tuple[str, str]:  # noqa: ANN001 - Dagster contexts
        return context.asset_partition_key, context.asset_key.path[0]

    def handle_output(self, context: dg.OutputContext, obj: dict) -> None:
        tenant_id, module = self._module_dir(context)
        version = obj["version"]
        store = self._store()
        path = store.write_json(store.path(tenant_id, module, "modules", f"{version}.json"), obj)
        store.write_json(store.path(tenant_id, module, "modules", "candidate.json"), {"version": version})
        context.add_output_metadata({"module_path": dg.MetadataValue.path(path), "version": version})

    def load_input(self, context: dg.InputContext) -> dict:
        return load_module_payload(self._store(), context.asset_partition_key, context.asset_key.path[0])


def load_module_payload(store: ArtifactStore, tenant_id: str, module: str, version: str | None = None) -> dict:
    """A stored module version (the newest candidate when ``version`` is None)."""
    if version is None:
        pointer = store.read_json(store.path(tenant_id, module, "modules", "candidate.json"))
        if pointer is None:
            raise FileNotFoundError(f"no trained module for {tenant_id}/{module}")
        version = pointer["version"]
    payload = store.read_json(store.path(tenant_id, module, "modules", f"{version}.json"))
    if payload is None:
        raise FileNotFoundError(f"module version {version} of {tenant_id}/{module} is missing")
    return payload
