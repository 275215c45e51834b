"""deploy/dagster-postgres.yaml on a real Postgres: a tenant partition materialized through it
lands in Postgres (runs, events, partitions), not in SQLite; and the sensor-driven loop runs with
Dagster and Phoenix both on Postgres."""

import shutil
import uuid

import dagster as dg
import psycopg2

from cogniverse_assets.assets.routing_traces import routing_traces_assets
from cogniverse_assets.demo import register_partitions, start_daemon, stop_daemon, wait_for_runs
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import ConfigStoreResource, open_config_store
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


def test_the_sensor_loop_runs_with_dagster_and_phoenix_on_postgres(
    tmp_path, monkeypatch, postgres_url, phoenix_postgres
):
    """The end-to-end test's path (traffic → trace_threshold_sensor in a real daemon → the lane run)
    with Dagster's storage and Phoenix's both on Postgres. The lane's plan skips (five examples), so
    no LM is needed: what is under test is the storage, not training."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_FILE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    monkeypatch.setenv("PHOENIX_ENDPOINT", phoenix_postgres.endpoint)  # the daemon and its runs read it
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    monkeypatch.setenv("COGNIVERSE_STEP_EXECUTION", "in_process")
    tenant = f"pgl-{uuid.uuid4().hex[:6]}"
    open_config_store().add(
        tenant, min_samples_for_optimization=3, optimization_interval_seconds=60, use_synthetic_data=False
    )
    emit_traffic(phoenix_postgres, tenant, n=5, feedback_rate=1.0, seed=6, modules=["modality"], progress=False)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        register_partitions(instance, [tenant])
        daemon = start_daemon(home, tmp_path / "daemon.log")
        try:
            (run,) = wait_for_runs(instance, [tenant], expected=1, timeout_s=600, progress=lambda _: None)
        finally:
            stop_daemon(daemon)
        assert run.status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
        assert run.tags["module"] == "modality" and run.tags["trigger"] == "trace_threshold_sensor"

    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (run.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND asset_key = %s AND partition = %s",
            ('["modality", "optimization_plan"]', tenant),
        )
        assert cursor.fetchone() == (1,)
    assert not list(home.glob("**/*.db"))  # nothing went to SQLite
