"""`optimize_tenant` through the real CLI backfill and a real daemon: one run per tenant, a tenant
whose Phoenix is broken fails (and is recorded per tenant × module) while the others succeed,
and two runs of the same tenant never overlap."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from cogniverse_assets.demo import prepare_instance, start_daemon, stop_daemon
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources.config_store import open_config_store
from cogniverse_resources.stack import REPO_ROOT, free_port

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def backfill(home: Path, partitions: list[str]) -> str:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "job",
            "backfill",
            "-j",
            "optimize_tenant",
            "--partitions",
            ",".join(partitions),
            "--noprompt",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def wait_for(predicate, timeout_s: float, what: str, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{log.read_text()[-4000:]}")


def test_backfill_isolates_a_broken_tenant_and_serializes_each_tenant(phoenix, tmp_path, monkeypatch):
    monkeypatch.setenv("CONFIG_STORE_URL", f"sqlite://{tmp_path}/config.sqlite")
    monkeypatch.setenv("COGNIVERSE_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    # One process per run rather than per step: 24 small steps per run on a 2-core machine.
    monkeypatch.setenv("COGNIVERSE_STEP_EXECUTION", "in_process")
    store = open_config_store()
    settings = {"enable_auto_optimization": False, "use_synthetic_data": False}  # backfills only, no sensor runs
    store.add("bf-ok", **settings)
    store.add("bf-other", **settings)
    store.add("bf-broken", phoenix_endpoint=f"http://127.0.0.1:{free_port()}", **settings)  # nothing listens there
    emit_traffic(phoenix, "bf-ok", n=6, feedback_rate=1.0, seed=3, modules=["modality"], progress=False)

    home, log = tmp_path / "dagster_home", tmp_path / "daemon.log"
    instance = prepare_instance(home, ["bf-ok", "bf-other", "bf-broken"])
    daemon = start_daemon(home, log)
    try:
        backfill(home, ["bf-ok", "bf-other", "bf-broken"])
        backfill(home, ["bf-ok"])  # queued behind bf-ok's first run, never beside it

        def finished_runs():
            runs = [run for run in instance.get_runs() if run.job_name == "optimize_tenant"]
            return runs if len(runs) == 4 and all(run.status in FINISHED for run in runs) else None

        runs = wait_for(finished_runs, 900, "4 finished optimize_tenant runs", log)
        recorded = wait_for(
            lambda: (
                instance.fetch_observations(
                    dg.AssetRecordsFilter(
                        asset_key=dg.AssetKey(["modality", "routing_traces"]), asset_partitions=["bf-broken"]
                    ),
                    limit=1,
                ).records
            ),
            120,
            "lane_failure_sensor's observation",
            log,
        )
    finally:
        stop_daemon(daemon)

    status = {}
    for run in runs:
        status.setdefault(run.tags["dagster/partition"], []).append(run.status)
    assert status == {
        "bf-ok": [dg.DagsterRunStatus.SUCCESS] * 2,
        "bf-other": [dg.DagsterRunStatus.SUCCESS],
        "bf-broken": [dg.DagsterRunStatus.FAILURE],
    }, log.read_text()[-4000:]
    assert all(run.tags.get("dagster/backfill") for run in runs)

    observation = recorded[0].asset_observation
    assert observation.metadata["status"].value == "failed"
    error = observation.metadata["error"].value
    assert (
        error.startswith("Exceeded max_retries of 3 <- ") and "bf-broken/modality" in error and "ConnectError" in error
    )

    # The healthy tenant's lanes ran to the end of what their data allows (a plan: skip, too few examples).
    plan = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["modality", "optimization_plan"]), asset_partitions=["bf-ok"]),
        limit=5,
    ).records
    assert len(plan) == 2

    first, second = sorted(
        (record for record in instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": "bf-ok"}))),
        key=lambda record: record.start_time,
    )
    assert first.end_time <= second.start_time, "two runs of one tenant overlapped"
