"""``cogniverse optimize``: check a tenant's lanes the way ``trace_threshold_sensor`` does and, unless
``--dry-run``, launch them through Dagster (queued on the instance, visible in the UI, tagged like
the sensor's runs).

Exit codes: 0 done (dry run printed, runs queued, or with ``--wait`` every run succeeded); 1 a run
failed or was canceled (``--wait``); 2 a usage or configuration error (unknown tenant or module);
3 nothing launched: no selected lane meets its conditions (``--force`` overrides them);
4 the tenant's Phoenix did not answer, so the conditions could not be checked.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from cogniverse_assets.cli.common import CliError, add_module_option
from cogniverse_assets.modules.registry import ROUTING_MODULES

if TYPE_CHECKING:  # imported where used: every `cogniverse` command would otherwise load Dagster's instance code
    import dagster as dg

    from cogniverse_assets.demo import LaneOutcome
    from cogniverse_resources.artifacts import ArtifactStore
    from cogniverse_resources.phoenix import PhoenixResource
    from cogniverse_resources.tenant import RoutingConfig

EXIT_OK, EXIT_RUN_FAILED, EXIT_NOTHING_TO_LAUNCH, EXIT_PHOENIX_UNREACHABLE = 0, 1, 3, 4
TRIGGER = "cogniverse optimize"  # the runs' `trigger` tag (the sensor's runs say trace_threshold_sensor)
FORCED_TAG = "forced"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="check a tenant's lanes like the sensor does and launch them through Dagster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tenant", required=True)
    add_module_option(parser, action="append", help="only this module's lane (repeatable); default all")
    parser.add_argument("--dry-run", action="store_true", help="print verdicts and plans; launch nothing")
    parser.add_argument(
        "--force",
        action="store_true",
        help="launch whatever the verdict (interval, minimum samples, time window, disabled tenant)",
    )
    parser.add_argument("--force-training", action="store_true", help="train even when the training set is unchanged")
    parser.add_argument("--wait", action="store_true", help="follow the runs to the end; print the outcome table")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits (default 3600)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.set_defaults(func=cmd_optimize)


@dataclass(frozen=True)
class PlanSummary:
    """The plan ``optimization_plan`` would make: decision, optimizer, who decided, why."""

    decision: str
    optimizer: str | None
    source: str
    reasons: list[str]


@dataclass
class LaneReport:
    """One lane as ``cogniverse optimize`` saw it, and what it did about it."""

    module: str
    verdict: str  # the sensor's verdict ("run" or why not)
    reason: str  # the verdict in words
    new_labeled: int | None
    would_run: bool  # what the sensor would do now
    launch: bool  # what this command does (the sensor's answer, or --force)
    attempt: int
    plan: PlanSummary | None = None
    plan_note: str = ""
    run_id: str | None = None
    run_status: str | None = None


@dataclass
class OptimizeReport:
    tenant_id: str
    dry_run: bool
    forced: bool
    force_training: bool
    lanes: list[LaneReport] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    outcomes: list[LaneOutcome] = field(default_factory=list)
    exit_code: int = EXIT_OK


def lane_reports(
    instance: dg.DagsterInstance,
    phoenix: PhoenixResource,
    artifacts: ArtifactStore,
    config: RoutingConfig,
    modules: list[str],
    force: bool,
    force_training: bool,
    now: datetime,
) -> tuple[list[LaneReport], list[str]]:
    """Each selected lane's verdict (``sensors.evaluate_tenants``, the sensor's own function) and the
    plan ``optimization_plan`` would make on the stored training set (``plan_lane``): no LM call."""
    from cogniverse_assets.assets.optimization_plan import NoTrainingSet, plan_lane
    from cogniverse_assets.sensors import RUN, evaluate_tenants
    from cogniverse_resources.lm import LanguageModelResource

    local_student = LanguageModelResource.from_env().is_local()

    checks, unreachable = evaluate_tenants(instance, phoenix, [config], now)
    reports = []
    for check in checks:
        if check.module not in modules:
            continue
        reason = check.verdict
        if check.verdict == RUN:
            reason = f"{check.new_labeled} new labeled traces >= {config.min_samples_for_optimization}"
        report = LaneReport(
            module=check.module,
            verdict=check.verdict,
            reason=reason,
            new_labeled=check.new_labeled,
            would_run=check.requested,
            launch=check.requested or force,
            attempt=check.attempt,
        )
        try:
            decided = plan_lane(
                instance, artifacts, config, ROUTING_MODULES[check.module], force_training, local_student
            )
        except NoTrainingSet:
            report.plan_note = "no training set yet: the run's own ingestion builds the first one"
        else:
            plan = decided.plan
            report.plan = PlanSummary(plan.decision, plan.optimizer, plan.source, plan.reasons)
            report.plan_note = "planned on the stored training set; a run first adds the traces that arrived since"
        reports.append(report)
    return reports, unreachable


def cmd_optimize(args: argparse.Namespace) -> int:
    from cogniverse_resources.artifacts import ArtifactStore
    from cogniverse_resources.config_store import open_config_store
    from cogniverse_resources.phoenix import PhoenixResource

    config = open_config_store().get(args.tenant)  # TenantNotFound: exit 2 with its message
    modules = list(dict.fromkeys(args.module or ROUTING_MODULES))
    instance = dagster_instance()
    report = OptimizeReport(config.tenant_id, args.dry_run, args.force, args.force_training)
    report.lanes, report.unreachable = lane_reports(
        instance,
        PhoenixResource.from_env(),
        ArtifactStore.from_env(),
        config,
        modules,
        args.force,
        args.force_training,
        datetime.now(timezone.utc),
    )
    if report.unreachable and not args.force:
        report.exit_code = EXIT_PHOENIX_UNREACHABLE
    elif not args.dry_run:
        launching = [lane for lane in report.lanes if lane.launch]
        if not launching:
            report.exit_code = EXIT_NOTHING_TO_LAUNCH
        else:
            launch_lanes(instance, config.tenant_id, launching, args.force, args.force_training)
            if args.wait:
                report.exit_code = wait_for_lanes(instance, launching, args.timeout, quiet=args.json)
                report.outcomes = lane_outcomes(config.tenant_id, [lane.module for lane in launching])
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report))
    return report.exit_code


def dagster_instance() -> dg.DagsterInstance:
    """The instance the UI and the daemon use: ``DAGSTER_HOME``, else the project's dagster_home/."""
    import dagster as dg

    from cogniverse_assets.cli.run import dagster_home

    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))
    return dg.DagsterInstance.get()


def run_tags(tenant_id: str, lane: LaneReport, force: bool, force_training: bool) -> dict[str, str]:
    """The sensor's tags (tenant, module, attempt; the partition), with this command as the trigger."""
    from cogniverse_assets.assets.optimization_plan import FORCE_TRAINING_TAG
    from cogniverse_assets.sensors import lane_tags

    tags = {"dagster/partition": tenant_id, **lane_tags(tenant_id, lane.module, lane.attempt, TRIGGER)}
    if force:
        tags[FORCED_TAG] = "true"
    if force_training:
        tags[FORCE_TRAINING_TAG] = "true"
    return tags


def launch_lanes(
    instance: dg.DagsterInstance, tenant_id: str, lanes: list[LaneReport], force: bool, force_training: bool
) -> None:
    """Queue one run per lane (the lane's assets, the tenant's partition) on the instance's run
    coordinator, as ``dagster job launch`` does; sets each lane's ``run_id``."""
    from dagster import __version__
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    from cogniverse_assets.assets.lane import lane_keys
    from cogniverse_assets.jobs import optimize_tenant
    from cogniverse_resources.paths import REPO_ROOT

    target = WorkspaceFileTarget(paths=[str(REPO_ROOT / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target, version=__version__, code_server_log_level="WARNING") as process:
        workspace = process.create_request_context()
        [location_name] = workspace.code_location_names
        if workspace.has_code_location_error(location_name):
            raise CliError(f"the code location failed to load: {workspace.get_code_location_error(location_name)}")
        location = workspace.get_code_location(location_name)
        [repository] = location.get_repositories().values()
        for lane in lanes:
            selector = JobSubsetSelector(
                location_name=location.name,
                repository_name=repository.name,
                job_name=optimize_tenant.name,
                op_selection=None,
                asset_selection=lane_keys(lane.module),
            )
            remote_job = location.get_job(selector)
            plan = location.get_execution_plan(remote_job, {}, step_keys_to_execute=None, known_state=None)
            run = instance.create_run(
                job_name=remote_job.name,
                run_id=None,
                run_config={},
                resolved_op_selection=None,
                step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
                op_selection=None,
                status=None,
                root_run_id=None,
                parent_run_id=None,
                tags=run_tags(tenant_id, lane, force, force_training),
                job_snapshot=remote_job.job_snapshot,
                execution_plan_snapshot=plan.execution_plan_snapshot,
                parent_job_snapshot=remote_job.parent_job_snapshot,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
                asset_selection=frozenset(lane_keys(lane.module)),
                asset_check_selection=None,
                asset_graph=repository.asset_graph,
            )
            lane.run_id = instance.submit_run(run.run_id, workspace).run_id
            lane.run_status = instance.get_run_by_id(lane.run_id).status.value


def wait_for_lanes(instance: dg.DagsterInstance, lanes: list[LaneReport], timeout_s: float, quiet: bool = False) -> int:
    """Follow the lanes' runs to the end; ``EXIT_RUN_FAILED`` if any failed, was canceled or is
    still going at the timeout."""
    import dagster as dg

    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        runs = {lane.run_id: instance.get_run_by_id(lane.run_id) for lane in lanes}
        for lane in lanes:
            lane.run_status = runs[lane.run_id].status.value
        status = ", ".join(f"{lane.module} {lane.run_status}" for lane in lanes)
        if status != last and not quiet:
            print(f"  {status}", flush=True)
            last = status
        if all(run.status in finished for run in runs.values()):
            break
        if time.monotonic() > deadline:
            return EXIT_RUN_FAILED
        time.sleep(2)
    return EXIT_OK if all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs.values()) else EXIT_RUN_FAILED


def lane_outcomes(tenant_id: str, modules: list[str]) -> list[LaneOutcome]:
    from cogniverse_assets.demo import outcomes
    from cogniverse_resources.artifacts import ArtifactStore
    from cogniverse_resources.config_store import open_config_store

    return outcomes(open_config_store(), ArtifactStore.from_env(), [tenant_id], modules)


def format_report(report: OptimizeReport) -> str:
    from cogniverse_assets.demo import format_table

    lines = [f"tenant {report.tenant_id}" + (" (dry run: nothing launched)" if report.dry_run else "")]
    for lane in report.lanes:
        action = "would run" if lane.would_run else "would not run"
        if lane.launch and not lane.would_run:
            action += ", forced"
        if lane.run_id:
            action = f"launched run {lane.run_id} ({lane.run_status})"
        lines.append(f"  {lane.module:12s} {action}: {lane.reason}")
        if lane.plan:
            optimizer = f" with {lane.plan.optimizer}" if lane.plan.optimizer else ""
            lines.append(f"  {'':12s} plan: {lane.plan.decision}{optimizer} ({lane.plan.source}); {lane.plan_note}")
            lines += [f"  {'':12s}   - {reason}" for reason in lane.plan.reasons]
        else:
            lines.append(f"  {'':12s} plan: {lane.plan_note}")
    lines += [f"  Phoenix unreachable: {item}" for item in report.unreachable]
    if report.exit_code == EXIT_NOTHING_TO_LAUNCH:
        lines.append("nothing launched: no selected lane meets its conditions (--force launches anyway)")
    if report.exit_code == EXIT_PHOENIX_UNREACHABLE:
        lines.append("nothing launched: the tenant's Phoenix did not answer (--force launches anyway)")
    if any(lane.run_status == "QUEUED" for lane in report.lanes) and not report.outcomes:
        lines.append("queued on the Dagster instance: its daemon (`make run`, `dagster dev`) launches them")
    if report.outcomes:
        lines += ["", format_table(report.outcomes)]
    return "\n".join(lines)
