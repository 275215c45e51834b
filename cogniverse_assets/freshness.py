"""Per-tenant lane freshness: the ``lane_freshness`` asset check on each tenant's partition of
``<module>/optimization_plan``.

A lane is **stale** when its last run failed, or when it has been due (enough new labeled traces,
its interval passed, inside its time window) for longer than ``FRESHNESS_GRACE`` plus the
tenant's ``max_optimization_seconds`` without completing. A completed plan (a skip for "nothing new"
included) is fresh, and so is a lane with too few new labels, inside its interval, outside its
window, or of a disabled tenant: nothing is owed.

``trace_threshold_sensor`` judges every lane on each tick (it already knows the verdicts) and reports
an evaluation when a lane turns stale or recovers; the plan asset reports "fresh" each time it
completes. The Dagster UI shows the check per tenant partition.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable

import dagster as dg

from cogniverse_assets.assets.lane import COMPLETION_STAGE
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_resources.tenant import RoutingConfig

if TYPE_CHECKING:
    from cogniverse_assets.sensors import LaneCheck

FRESHNESS_CHECK = "lane_freshness"
# How long a due lane may wait for its run to start (a sensor tick, the run queue) before it is
# stale; the tenant's max_optimization_seconds is added for the run itself.
FRESHNESS_GRACE = timedelta(minutes=15)


@dataclass(frozen=True)
class LaneFreshness:
    """One lane's freshness on one tick; ``due_since`` is carried in the sensor's cursor."""

    lane: str  # "tenant/module"
    tenant_id: str
    module: str
    stale: bool
    reason: str
    due_since: datetime | None
    failed: bool = False


def freshness_check_spec(module: str) -> dg.AssetCheckSpec:
    # Partitioned checks are a preview in dagster 1.13; they are what shows freshness per tenant
    # (test_freshness pins the behaviour we rely on), so the warning is silenced here only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            FRESHNESS_CHECK,
            asset=dg.AssetKey([module, COMPLETION_STAGE]),
            partitions_def=tenants_partitions,
            description="Per tenant: fails when the lane's last run failed, or when it has been due (enough new "
            "labels, interval passed, inside its window) for longer than the grace without completing.",
        )


def fresh_on_completion() -> dg.AssetCheckResult:
    """What the plan asset reports on completing: the lane owes nothing now."""
    return dg.AssetCheckResult(check_name=FRESHNESS_CHECK, passed=True, metadata={"reason": "the lane just completed"})


def judge_freshness(
    checks: Iterable[LaneCheck], configs: dict[str, RoutingConfig], now: datetime, due_since: dict[str, datetime]
) -> list[LaneFreshness]:
    """Each lane whose freshness this tick can tell (a lane whose count was deferred or whose
    Phoenix did not answer keeps its previous state and is left out)."""
    from cogniverse_assets.sensors import DEFERRED, MAX_LANE_RETRIES, UNREACHABLE

    judged = []
    for check in checks:
        config = configs[check.tenant_id]
        since = due_since.get(check.name)
        if check.verdict in (DEFERRED, UNREACHABLE):
            continue
        if not config.enable_auto_optimization:
            judged.append(LaneFreshness(check.name, check.tenant_id, check.module, False, check.verdict, None))
        elif check.failure is not None:
            reason = (
                f"last run failed (run {check.failure.run_id}, attempt {check.failure.attempt} of {MAX_LANE_RETRIES})"
            )
            judged.append(LaneFreshness(check.name, check.tenant_id, check.module, True, reason, since, failed=True))
        elif check.requested:
            since = since or now
            allowed = FRESHNESS_GRACE + timedelta(seconds=config.max_optimization_seconds)
            late = now - since > allowed
            seconds = int(allowed.total_seconds())
            reason = (
                f"due since {since.isoformat()} ({check.verdict}) and not completed within {seconds}s"
                if late
                else f"due since {since.isoformat()}: its run is owed within {seconds}s"
            )
            judged.append(LaneFreshness(check.name, check.tenant_id, check.module, late, reason, since))
        else:
            judged.append(LaneFreshness(check.name, check.tenant_id, check.module, False, check.verdict, None))
    return judged


def freshness_events(judged: list[LaneFreshness], previously_stale: set[str]) -> list[dg.AssetCheckEvaluation]:
    """Evaluations for the lanes whose state changed: turned stale, or recovered without a plan
    (a fresh lane that was never stale is reported by its plan asset, not on every tick)."""
    events = []
    for lane in judged:
        if lane.stale == (lane.lane in previously_stale):
            continue
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey([lane.module, COMPLETION_STAGE]),
                check_name=FRESHNESS_CHECK,
                passed=not lane.stale,
                partition=lane.tenant_id,
                severity=dg.AssetCheckSeverity.ERROR if lane.failed else dg.AssetCheckSeverity.WARN,
                metadata={"reason": lane.reason, "due_since": lane.due_since.isoformat() if lane.due_since else "-"},
            )
        )
    return events
