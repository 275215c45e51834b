"""The closed loop, headless: traffic with feedback → the sensor, run by a real Dagster daemon,
starts the lanes → training → evaluation → gated promotion; then a table per tenant × module.

Used by ``make demo`` (``cogniverse demo``) and, at small scale, by the end-to-end test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from cogniverse_assets.assets.evaluation import EVALUATION_FILE
from cogniverse_assets.assets.optimization_plan import PLAN_FILE
from cogniverse_assets.assets.routing_traces import TRACES_TABLE
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_resources.artifacts import ArtifactStore
from cogniverse_resources.config_store import TenantConfigStore
from cogniverse_resources.paths import REPO_ROOT


@dataclass
class LaneOutcome:
    tenant_id: str
    module: str
    traces: int
    labeled: int
    optimizer: str
    deployed_accuracy: float | None
    candidate_accuracy: float | None
    # The paired gain and its interval on the validation split (the promotion gate's figures).
    gain: float | None
    interval: list[float] | None
    validation_size: int | None
    promoted: bool | None
    wall_time_s: float | None
    lm_calls: int | None


def prepare_instance(
    dagster_home: Path, tenants: list[str], max_concurrent_runs: int | None = None
) -> dg.DagsterInstance:
    """The project's instance config in ``dagster_home`` (``max_concurrent_runs`` overrides its run
    queue's limit), storage created, tenant partitions added.

    Done before the daemon starts: two processes creating a fresh SQLite storage at once race on
    its schema migrations.
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    if max_concurrent_runs is not None:
        config["run_coordinator"]["config"]["max_concurrent_runs"] = max_concurrent_runs
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    register_partitions(instance, tenants)
    return instance


def start_daemon(dagster_home: Path, log_file: Path) -> subprocess.Popen:
    """A real ``dagster-daemon`` (sensors, run queue) over this project's workspace."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_daemon(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def wait_for_runs(
    instance: dg.DagsterInstance, tenants: list[str], expected: int, timeout_s: float, progress=print
) -> list[dg.DagsterRun]:
    """Wait until ``expected`` sensor-triggered runs for ``tenants`` have finished."""
    deadline = time.monotonic() + timeout_s
    finished_states = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    last = ""
    while time.monotonic() < deadline:
        runs = [
            run
            for run in instance.get_runs()
            if run.tags.get("trigger") == "trace_threshold_sensor" and run.tags.get("tenant") in tenants
        ]
        done = [run for run in runs if run.status in finished_states]
        status = f"{len(runs)} runs requested, {len(done)} finished"
        if status != last:
            progress(status)
            last = status
        if len(done) >= expected:
            return runs
        time.sleep(3)
    raise TimeoutError(f"only {last} after {timeout_s:.0f}s")


def cancel_queued_runs(instance: dg.DagsterInstance, tenants: list[str]) -> int:
    """Cancel the sensor's runs for ``tenants`` still waiting in the queue (a lane's retry after its
    gate blocked, requested while the demo waited); the number canceled. Left queued, the next
    demo's daemon would run them before the lanes it waits for."""
    waiting = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED],
            tags={"trigger": "trace_threshold_sensor"},
        )
    )
    canceled = [run for run in waiting if run.tags.get("tenant") in tenants]
    for run in canceled:
        instance.report_run_canceled(run, message="canceled when the demo ended")
    return len(canceled)


def outcomes(
    store: TenantConfigStore, artifacts: ArtifactStore, tenants: list[str], modules: list[str] | None = None
) -> list[LaneOutcome]:
    rows = []
    for tenant_id in tenants:
        for module in modules or ROUTING_MODULES:
            traces = artifacts.read_table(tenant_id, module, TRACES_TABLE)
            plan = artifacts.read_json(artifacts.path(tenant_id, module, PLAN_FILE)) or {}
            evaluation = artifacts.read_json(artifacts.path(tenant_id, module, EVALUATION_FILE)) or {}
            figures = evaluation.get("figures") or {}
            version = evaluation.get("candidate_version")
            module_file = (
                artifacts.read_json(artifacts.path(tenant_id, module, "modules", f"{version}.json"))
                if version
                else None
            )
            deployed = store.deployed(tenant_id, module)
            rows.append(
                LaneOutcome(
                    tenant_id,
                    module,
                    traces=0 if traces is None else len(traces),
                    labeled=0 if traces is None else int(traces["provenance"].isin(["human", "llm", "router"]).sum()),
                    optimizer=plan.get("optimizer") or ("skip" if plan else "-"),
                    deployed_accuracy=evaluation.get("deployed", {}).get("accuracy"),
                    candidate_accuracy=evaluation.get("candidate", {}).get("accuracy"),
                    gain=figures.get("gain"),
                    interval=figures.get("interval"),
                    validation_size=evaluation.get("validation_size"),
                    promoted=(deployed is not None and deployed.version == version) if version else None,
                    wall_time_s=module_file.get("wall_time_s") if module_file else None,
                    lm_calls=module_file.get("lm_calls") if module_file else None,
                )
            )
    return rows


def format_table(rows: list[LaneOutcome]) -> str:
    def fmt(value, pattern="{:.3f}"):
        return "-" if value is None else pattern.format(value)

    header = (
        f"{'tenant':10s} {'module':12s} {'traces':>7s} {'labeled':>8s} {'optimizer':>10s} {'deployed':>9s} "
        f"{'candidate':>10s} {'gain [90% interval]':>24s} {'val n':>6s} {'promoted':>9s} {'train s':>8s} "
        f"{'LM calls':>9s}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        promoted = "-" if row.promoted is None else ("yes" if row.promoted else "no")
        gain = fmt(row.gain, "{:+.3f}")
        if row.interval:
            gain += f" [{row.interval[0]:+.2f}, {row.interval[1]:+.2f}]"
        lines.append(
            f"{row.tenant_id:10s} {row.module:12s} {row.traces:7d} {row.labeled:8d} {row.optimizer:>10s} "
            f"{fmt(row.deployed_accuracy):>9s} {fmt(row.candidate_accuracy):>10s} {gain:>24s} "
            f"{fmt(row.validation_size, '{:d}'):>6s} {promoted:>9s} "
            f"{fmt(row.wall_time_s, '{:.0f}'):>8s} {fmt(row.lm_calls, '{:d}'):>9s}"
        )
    return "\n".join(lines)


def register_partitions(instance: dg.DagsterInstance, tenants: list[str]) -> None:
    """What tenant_discovery_sensor does on its first tick; done up front to save a sensor interval."""
    known = set(instance.get_dynamic_partitions(tenants_partitions.name))
    missing = [tenant for tenant in tenants if tenant not in known]
    if missing:
        instance.add_dynamic_partitions(tenants_partitions.name, missing)
