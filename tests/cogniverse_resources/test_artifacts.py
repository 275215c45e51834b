"""Artifact paths: every hostile tenant id and path segment is rejected before touching storage;
writes are atomic (a failed write leaves the previous file and no temp file)."""

import pandas as pd
import pytest

from cogniverse_resources.artifacts import ArtifactStore, write_bytes_atomic
from cogniverse_resources.tenant import InvalidTenantId
from tests.hostile_ids import HOSTILE_TENANT_IDS


@pytest.mark.parametrize("tenant_id", HOSTILE_TENANT_IDS)
def test_hostile_tenant_ids_never_become_paths(tmp_path, tenant_id):
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    with pytest.raises(InvalidTenantId, match="invalid tenant id"):
        store.path(tenant_id, "modality", "routing_traces.parquet")
    with pytest.raises(InvalidTenantId):
        store.write_table(tenant_id, "modality", "routing_traces", pd.DataFrame({"a": [1]}))
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*"))


@pytest.mark.parametrize("segment", ["", ".", "..", "a/b", "../../etc"])
def test_hostile_path_segments_are_rejected(tmp_path, segment):
    store = ArtifactStore(root=str(tmp_path))
    with pytest.raises(ValueError, match="unsafe artifact path segment"):
        store.path("acme", segment)
    with pytest.raises(ValueError, match="unsafe artifact path segment"):
        store.global_path(segment)


def test_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    target = store.path("acme", "modality", "plan.json")
    write_bytes_atomic(target, b'{"v": 1}')

    with pytest.raises(TypeError):
        write_bytes_atomic(target, None)  # not bytes: fails inside the temp-file write
    assert target.read_bytes() == b'{"v": 1}'
    assert [path.name for path in (tmp_path / "acme" / "modality").iterdir()] == ["plan.json"]
