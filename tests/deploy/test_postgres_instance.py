"""deploy/dagster-postgres.yaml on a real Postgres: a tenant partition materialized through it
lands in Postgres (runs, events, partitions), not in SQLite."""

import shutil
import uuid

import dagster as dg
import psycopg2

from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource
from tests.deploy.chart import VALUES_FILE

INSTANCE_FILE = VALUES_FILE.parents[1] / "dagster-postgres.yaml"


def test_tenant_partition_materializes_on_postgres(tmp_path, monkeypatch, postgres_url, phoenix):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_FILE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    tenant = f"pg-{uuid.uuid4().hex[:6]}"
    config_store = ConfigStoreResource(url=f"sqlite://{tmp_path}/config.sqlite")
    config_store.store().add(tenant)
    emit_traffic(phoenix, tenant, n=6, feedback_rate=1.0, seed=5, modules=["modality"], progress=False)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions(tenants_partitions.name, [tenant])
        modality_traces = next(a for a in routing_traces_assets if a.key == dg.AssetKey(["modality", "routing_traces"]))
        result = dg.materialize(
            [modality_traces],
            partition_key=tenant,
            instance=instance,
            resources={
                "phoenix": phoenix,
                "config_store": config_store,
                "artifacts": ArtifactStore(root=str(tmp_path / "artifacts")),
            },
        )
        assert result.success
        [materialization] = result.asset_materializations_for_node("modality__routing_traces")
        assert materialization.partition == tenant and materialization.metadata["total_examples"].value == 6

    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)
        cursor.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'tenants'")
        assert cursor.fetchall() == [(tenant,)]
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition = %s",
            (tenant,),
        )
        assert cursor.fetchone() == (1,)
    assert not list(home.glob("**/*.db"))  # nothing went to SQLite
