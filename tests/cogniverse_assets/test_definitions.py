import sqlite3
import subprocess
import sys
from pathlib import Path

import dagster as dg

from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_assets.definitions import defs
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.sensors import tenant_discovery_sensor

REPO = Path(__file__).resolve().parents[2]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    assert "tenant_discovery_sensor" in {sensor.name for sensor in repository.sensor_defs}


def test_dg_check_defs_passes():
    result = subprocess.run([str(Path(sys.executable).with_name("dg")), "check", "defs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tenant_discovery_adds_new_tenants_once_and_ignores_invalid_records(tmp_path):
    resource = ConfigStoreResource(url=f"sqlite://{tmp_path}/config.sqlite")
    store = resource.store()
    store.add("acme")
    store.add("globex")
    with sqlite3.connect(store.path) as conn:  # a record written around validation
        conn.execute("INSERT INTO tenants VALUES ('bad|id', '{}', 0)")

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"config_store": resource})
        result = tenant_discovery_sensor(context)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == tenants_partitions.name
        assert sorted(request.partition_keys) == ["acme", "globex"]
        instance.add_dynamic_partitions(tenants_partitions.name, list(request.partition_keys))

        again = tenant_discovery_sensor(dg.build_sensor_context(instance=instance, resources={"config_store": resource}))
        assert isinstance(again, dg.SkipReason) and "no new tenants" in again.skip_message

        store.add("initech")
        third = tenant_discovery_sensor(dg.build_sensor_context(instance=instance, resources={"config_store": resource}))
        assert list(third.dynamic_partitions_requests[0].partition_keys) == ["initech"]
