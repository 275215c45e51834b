"""``lane_freshness`` per tenant: stale after a failed run or when a due lane does not complete
within the grace; fresh when there is nothing to do or the plan completed (a skip included)."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from cogniverse_assets import sensors
from cogniverse_assets.assets.lane import COMPLETION_STAGE
from cogniverse_assets.freshness import FRESHNESS_CHECK, FRESHNESS_GRACE
from cogniverse_assets.sensors import trace_threshold_sensor
from cogniverse_assets.traffic import emit_traffic
from tests.cogniverse_assets.assets.test_trained_module import MODALITY_LANE, _resources
from tests.cogniverse_assets.test_sensors import _Clock, _fail


def _tick(env, cursor=None, at: datetime | None = None, monkeypatch=None):
    if at is not None:
        monkeypatch.setattr(sensors, "datetime", _Clock(at))
    context = dg.build_sensor_context(
        instance=env.instance, cursor=cursor, resources={"config_store": env.config_store, "phoenix": env.phoenix}
    )
    return trace_threshold_sensor(context)


def _freshness(result, tenant: str) -> list[dg.AssetCheckEvaluation]:
    return [
        event
        for event in result.asset_events
        if isinstance(event, dg.AssetCheckEvaluation)
        and event.check_name == FRESHNESS_CHECK
        and event.partition == tenant
    ]


def test_a_completed_plan_reports_its_tenant_lane_fresh(tenant_env):
    # Four examples: the plan skips ("too few"), which is a completed lane and so fresh.
    tenant = tenant_env.add("fresh-skip", use_synthetic_data=False)
    emit_traffic(tenant_env.phoenix, tenant, n=4, feedback_rate=1.0, seed=91, progress=False, modules=["modality"])
    result = tenant_env.materialize(MODALITY_LANE[:4], tenant, **_resources(tenant_env))
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == FRESHNESS_CHECK and evaluation.passed
    assert evaluation.asset_key == dg.AssetKey(["modality", COMPLETION_STAGE])
    assert evaluation.partition == tenant


def test_a_failed_run_makes_the_lane_stale_until_it_completes(tenant_env):
    tenant = tenant_env.add("stale-fail", min_samples_for_optimization=50)
    _fail(tenant_env, tenant, attempt=1)
    first = _tick(tenant_env)
    (stale,) = _freshness(first, tenant)
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
    assert stale.asset_key == dg.AssetKey(["modality", COMPLETION_STAGE])
    assert stale.metadata["reason"].value.startswith(f"last run failed (run run-{tenant}-1, attempt 1 of 3)")
    assert f"{tenant}/modality" in json.loads(first.cursor)["stale"]
    tenant_env.instance.report_runless_asset_event(stale)  # what the daemon does with a sensor's events

    assert _freshness(_tick(tenant_env, first.cursor), tenant) == []  # unchanged: not reported again

    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["modality", COMPLETION_STAGE]), partition=tenant)
    )
    recovered = _tick(tenant_env, first.cursor)
    (fresh,) = _freshness(recovered, tenant)
    assert fresh.passed and f"{tenant}/modality" not in json.loads(recovered.cursor)["stale"]


def test_a_due_lane_that_does_not_complete_within_the_grace_is_stale(tenant_env, monkeypatch):
    tenant = tenant_env.add("stale-late", min_samples_for_optimization=3, max_optimization_seconds=60)
    emit_traffic(tenant_env.phoenix, tenant, n=4, feedback_rate=1.0, seed=92, progress=False, modules=["modality"])
    start = datetime.now(timezone.utc) + timedelta(seconds=1)
    due = _tick(tenant_env, at=start, monkeypatch=monkeypatch)
    assert [request.tags["module"] for request in due.run_requests] == ["modality"]
    assert _freshness(due, tenant) == []  # due, and its run is owed within the grace: still fresh
    assert json.loads(due.cursor)["due_since"][f"{tenant}/modality"] == start.isoformat()

    within = _tick(tenant_env, due.cursor, at=start + FRESHNESS_GRACE, monkeypatch=monkeypatch)
    assert _freshness(within, tenant) == []

    late = _tick(tenant_env, within.cursor, at=start + FRESHNESS_GRACE + timedelta(seconds=61), monkeypatch=monkeypatch)
    (stale,) = _freshness(late, tenant)
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert stale.metadata["due_since"].value == start.isoformat()
    assert "not completed within 960s" in stale.metadata["reason"].value


def test_too_few_new_labels_is_fresh_however_long_it_waits(tenant_env, monkeypatch):
    tenant = tenant_env.add("fresh-few", min_samples_for_optimization=50)
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=1.0, seed=93, progress=False, modules=["modality"])
    now = datetime.now(timezone.utc)
    first = _tick(tenant_env, at=now, monkeypatch=monkeypatch)
    later = _tick(tenant_env, first.cursor, at=now + timedelta(hours=20), monkeypatch=monkeypatch)
    assert _freshness(first, tenant) == _freshness(later, tenant) == []
    assert not any(lane.startswith(tenant) for lane in json.loads(later.cursor)["due_since"])


def test_a_lane_waiting_for_its_window_is_not_stale(tenant_env, monkeypatch):
    now = datetime.now(timezone.utc)
    closed = f"{now + timedelta(hours=2):%H:%M}-{now + timedelta(hours=3):%H:%M}"
    tenant = tenant_env.add("fresh-win", min_samples_for_optimization=2, optimization_window=closed)
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=1.0, seed=94, progress=False, modules=["modality"])
    first = _tick(tenant_env, at=now, monkeypatch=monkeypatch)
    later = _tick(tenant_env, first.cursor, at=now + timedelta(minutes=90), monkeypatch=monkeypatch)
    assert _freshness(first, tenant) == _freshness(later, tenant) == []
    assert not first.run_requests and not later.run_requests
