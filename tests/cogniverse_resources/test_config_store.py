import sqlite3
import uuid

import pytest
from pydantic import ValidationError

from cogniverse_resources.config_store import (
    RedisConfigStore,
    SQLiteConfigStore,
    TenantNotFound,
    open_config_store,
)
from cogniverse_resources.tenant import InvalidTenantId
from tests.hostile_ids import HOSTILE_TENANT_IDS


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return SQLiteConfigStore(tmp_path / "config.sqlite")
    url = request.getfixturevalue("redis_url")
    return RedisConfigStore(url, namespace=f"test-{uuid.uuid4().hex[:8]}")


def test_add_get_list_update(store):
    store.add("acme")
    store.add("globex", min_samples_for_optimization=10)
    assert store.tenant_ids() == ["acme", "globex"]
    assert store.get("globex").min_samples_for_optimization == 10
    updated = store.update("acme", synthetic_data_ratio="0.5", enable_auto_optimization="false")
    assert updated.synthetic_data_ratio == 0.5
    assert store.get("acme").enable_auto_optimization is False
    assert store.active_tenant_ids() == ["globex"]


def test_listing_reads_every_config_as_get_does_across_read_chunks(store, monkeypatch):
    from cogniverse_resources import config_store

    monkeypatch.setattr(config_store, "REDIS_MGET_CHUNK", 2)  # 5 tenants: chunks of 2, 2 and 1
    for index, tenant_id in enumerate(["e", "a", "d", "b", "c"]):
        store.add(tenant_id, min_samples_for_optimization=10 + index)
    listed = store.list()
    assert [config.tenant_id for config in listed] == ["a", "b", "c", "d", "e"]
    assert listed == [store.get(tenant_id) for tenant_id in ["a", "b", "c", "d", "e"]]
    assert [config.min_samples_for_optimization for config in listed] == [11, 13, 14, 12, 10]


def test_duplicates_unknown_and_invalid_values(store):
    store.add("acme")
    with pytest.raises(ValueError, match="already exists"):
        store.add("acme")
    with pytest.raises(TenantNotFound, match="unknown tenant 'nobody'"):
        store.get("nobody")
    with pytest.raises(ValidationError, match="synthetic_data_ratio"):
        store.update("acme", synthetic_data_ratio=3)
    assert store.get("acme").synthetic_data_ratio == 0.3  # the failed update wrote nothing


@pytest.mark.parametrize("tenant_id", HOSTILE_TENANT_IDS[:8])
def test_hostile_ids_never_reach_the_store(store, tenant_id):
    with pytest.raises((InvalidTenantId, ValidationError)):
        store.add(tenant_id)
    with pytest.raises(InvalidTenantId):
        store.get(tenant_id)
    assert store.tenant_ids() == []


def test_a_corrupted_record_fails_loudly(tmp_path):
    store = SQLiteConfigStore(tmp_path / "config.sqlite")
    store.add("acme")
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "UPDATE tenants SET config = ? WHERE tenant_id = 'acme'",
            ('{"tenant_id": "acme", "synthetic_data_ratio": 9}',),
        )
    with pytest.raises(ValidationError):
        store.get("acme")


def test_open_config_store_by_url(tmp_path, redis_url):
    assert isinstance(open_config_store(""), SQLiteConfigStore)
    assert isinstance(open_config_store(f"sqlite://{tmp_path}/x.sqlite"), SQLiteConfigStore)
    redis_store = open_config_store(redis_url)
    assert isinstance(redis_store, RedisConfigStore)
    with pytest.raises(ValueError, match="unsupported CONFIG_STORE_URL"):
        open_config_store("mysql://nope")


def test_redis_password_is_not_in_the_repr():
    store = RedisConfigStore("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(store)
