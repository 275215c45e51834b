"""``trace_threshold_sensor``'s conditions one by one, against a real Phoenix server."""

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import dagster as dg

from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.phoenix import LaneCountRequest, PhoenixResource
from cogniverse_resources.stack import free_port
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets import sensors
from cogniverse_assets.sensors import (
    COMPLETION_STAGE,
    DEFERRED,
    evaluate_tenant,
    lane_keys,
    tenant_discovery_sensor,
    trace_threshold_sensor,
)
from cogniverse_assets.traffic import emit_traffic


def _tick(env, phoenix=None):
    context = dg.build_sensor_context(
        instance=env.instance, resources={"config_store": env.config_store, "phoenix": phoenix or env.phoenix}
    )
    return trace_threshold_sensor(context)


class _Clock:
    """Stands in for ``datetime`` in the sensor module: ``now()`` is a fixed moment."""

    def __init__(self, moment: datetime):
        self.moment = moment

    def now(self, tz=None):
        return self.moment

    def __getattr__(self, name):
        return getattr(datetime, name)


def _skip(result) -> str:
    assert not result.run_requests, result.run_requests
    return result.skip_reason.skip_message


def test_runs_only_modules_with_enough_new_labeled_traces(tenant_env):
    tenant = tenant_env.add("thr", min_samples_for_optimization=5, min_trace_confidence=0.99)
    emit_traffic(tenant_env.phoenix, tenant, n=8, feedback_rate=1.0, seed=11, progress=False, modules=["modality"])
    result = _tick(tenant_env)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == tenant
    assert request.tags["tenant"] == tenant and request.tags["module"] == "modality"
    assert list(request.asset_selection) == lane_keys("modality")
    assert request.run_key == f"{tenant}.modality.never.1"
    assert json.loads(result.cursor)["requested"] == [request.run_key]
    assert _tick(tenant_env).run_requests[0].run_key == request.run_key  # deterministic


def test_too_few_labeled_traces_is_a_skip_with_the_reason(tenant_env):
    tenant = tenant_env.add("few", min_samples_for_optimization=50)
    emit_traffic(tenant_env.phoenix, tenant, n=5, feedback_rate=1.0, seed=12, progress=False)
    message = _skip(_tick(tenant_env))
    for module in ("modality", "cross_modal", "routing"):
        assert f"{tenant}/{module}: 5 new labeled traces < 50" in message


def test_disabled_tenant_is_skipped(tenant_env):
    tenant = tenant_env.add("off", min_samples_for_optimization=1, enable_auto_optimization=False)
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=1.0, seed=13, progress=False)
    assert f"{tenant}/modality: auto-optimization disabled" in _skip(_tick(tenant_env))


def test_interval_is_measured_from_the_last_successful_optimization(tenant_env):
    tenant = tenant_env.add("intv", min_samples_for_optimization=2, optimization_interval_seconds=3600)
    emit_traffic(tenant_env.phoenix, tenant, n=4, feedback_rate=1.0, seed=14, progress=False)
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["modality", COMPLETION_STAGE]), partition=tenant)
    )
    result = _tick(tenant_env)
    modules = {request.tags["module"] for request in result.run_requests}
    assert modules == {"cross_modal", "routing"}  # modality was optimized moments ago


def test_new_traces_are_counted_since_the_last_success(tenant_env):
    tenant = tenant_env.add("since", min_samples_for_optimization=3, optimization_interval_seconds=60)
    emit_traffic(tenant_env.phoenix, tenant, n=5, feedback_rate=1.0, seed=15, progress=False, modules=["routing"])
    # A success recorded after the traffic: nothing is new any more, even once the interval passes.
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["routing", COMPLETION_STAGE]), partition=tenant)
    )
    config = tenant_env.config_store.store().get(tenant)
    checks = evaluate_tenant(tenant_env.instance, tenant_env.phoenix, config, datetime.now(timezone.utc) + timedelta(seconds=61))
    routing = next(check for check in checks if check.module == "routing")
    assert routing.new_labeled == 0 and routing.verdict == "0 new labeled traces < 3"


def test_phoenix_down_is_a_skip_not_a_crash(tenant_env):
    tenant_env.add("dark", min_samples_for_optimization=1)
    dead = PhoenixResource(endpoint=f"http://127.0.0.1:{free_port()}", timeout_s=2)
    assert "Phoenix unreachable" in _skip(_tick(tenant_env, phoenix=dead))


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
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == tenants_partitions.name
        assert sorted(request.partition_keys) == ["acme", "globex"]
        instance.add_dynamic_partitions(tenants_partitions.name, list(request.partition_keys))

        again = tenant_discovery_sensor(dg.build_sensor_context(instance=instance, resources={"config_store": resource}))
        assert isinstance(again, dg.SkipReason) and "no new tenants" in again.skip_message

        store.add("initech")
        third = tenant_discovery_sensor(dg.build_sensor_context(instance=instance, resources={"config_store": resource}))
        assert list(third.dynamic_partitions_requests[0].partition_keys) == ["initech"]


def test_failure_observations_name_tenant_module_and_root_cause():
    from dagster._utils.error import SerializableErrorInfo

    from cogniverse_assets.sensors import error_chain, failure_observations

    root = SerializableErrorInfo("httpx.ConnectError: [Errno 111] Connection refused\n", [], "ConnectError")
    ours = SerializableErrorInfo("cogniverse_resources.phoenix.PhoenixUnavailable: Phoenix at http://x failed\n", [], "PhoenixUnavailable", cause=root)
    error = SerializableErrorInfo("Exceeded max_retries of 3\n", [], "DagsterMaxRetriesExceededError", cause=ours)
    run = dg.DagsterRun(job_name="optimize_tenant", run_id="r1", tags={"dagster/partition": "acme"})
    [observation] = failure_observations(run, [("routing__routing_traces", error_chain(error)), ("not_a_lane_step", "x")])
    assert observation.asset_key == dg.AssetKey(["routing", "routing_traces"]) and observation.partition == "acme"
    assert observation.metadata["error"].value == (
        "Exceeded max_retries of 3 <- cogniverse_resources.phoenix.PhoenixUnavailable: Phoenix at http://x failed"
        " <- httpx.ConnectError: [Errno 111] Connection refused"
    )
    # Runs without a tenant (the meta-model) have nothing to record per tenant.
    assert failure_observations(dg.DagsterRun(job_name="j", run_id="r2"), [("routing__routing_traces", "boom")]) == []


def test_many_tenants_are_counted_in_batched_phoenix_requests(tenant_env):
    busy, quiet, silent = (tenant_env.add(name) for name in ("batch-busy", "batch-quiet", "batch-silent"))
    emit_traffic(tenant_env.phoenix, busy, n=3, feedback_rate=1.0, seed=61, progress=False, modules=["modality"])
    emit_traffic(tenant_env.phoenix, quiet, n=1, feedback_rate=1.0, seed=62, progress=False, modules=["modality"])
    since = {"modality": None, "cross_modal": None, "routing": None}
    # More tenants than fit in one request (Phoenix allows 50 aliases per query), most without a project.
    absent = [f"batch-absent-{index}" for index in range(40)]
    requests = {tenant: LaneCountRequest(since, 0.7) for tenant in [*absent[:20], busy, quiet, silent, *absent[20:]]}
    counts, errors = tenant_env.phoenix.count_labeled_routing_spans_many(requests)
    assert errors == {}
    assert counts[busy] == {"modality": 3, "cross_modal": 0, "routing": 0}
    assert counts[quiet] == {"modality": 1, "cross_modal": 0, "routing": 0}
    assert all(counts[tenant] == {"modality": 0, "cross_modal": 0, "routing": 0} for tenant in [silent, *absent])


def test_one_request_counts_every_tenant_since_a_shared_moment(tenant_env):
    busy, quiet = tenant_env.add("shared-busy"), tenant_env.add("shared-quiet")
    before = datetime.now(timezone.utc)
    emit_traffic(tenant_env.phoenix, busy, n=3, feedback_rate=1.0, seed=63, progress=False, modules=["modality"])
    emit_traffic(tenant_env.phoenix, quiet, n=1, feedback_rate=1.0, seed=64, progress=False, modules=["routing"])
    modules = ["modality", "cross_modal", "routing"]
    counts = tenant_env.phoenix.count_labeled_routing_spans_since([busy, quiet, "shared-absent"], modules, before, 0.7)
    assert counts == {
        busy: {"modality": 3, "cross_modal": 0, "routing": 0},
        quiet: {"modality": 0, "cross_modal": 0, "routing": 1},
        "shared-absent": {"modality": 0, "cross_modal": 0, "routing": 0},
    }
    later = tenant_env.phoenix.count_labeled_routing_spans_since([busy], modules, datetime.now(timezone.utc), 0.7)
    assert later == {busy: {"modality": 0, "cross_modal": 0, "routing": 0}}


def test_an_upper_bound_below_the_threshold_needs_no_exact_count(tenant_env, monkeypatch):
    tenant = tenant_env.add("bound", min_samples_for_optimization=3, optimization_interval_seconds=60)
    emit_traffic(tenant_env.phoenix, tenant, n=2, feedback_rate=1.0, seed=65, progress=False, modules=["modality"])
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["modality", COMPLETION_STAGE]), partition=tenant)
    )

    def no_exact_count(*args, **kwargs):
        raise AssertionError("an exact count was made")

    monkeypatch.setattr(PhoenixResource, "_count_chunk", no_exact_count)
    config = tenant_env.config_store.store().get(tenant)
    checks = evaluate_tenant(tenant_env.instance, tenant_env.phoenix, config, datetime.now(timezone.utc) + timedelta(seconds=61))
    modality = next(check for check in checks if check.module == "modality")
    assert modality.verdict == "at most 2 new labeled traces < 3"


def test_a_spent_count_budget_defers_lanes_to_the_next_tick_in_turn(tenant_env, monkeypatch):
    # 14 tenants whose three lanes need an exact count (each optimized after its one labeled span);
    # one exact-count request covers 12 tenants × 3 modules, so a zero budget counts 12 and defers 2.
    tenants = [tenant_env.add(f"turn{index:02d}", min_samples_for_optimization=1, optimization_interval_seconds=60) for index in range(14)]
    for index, tenant in enumerate(tenants):
        emit_traffic(tenant_env.phoenix, tenant, n=1, feedback_rate=1.0, seed=70 + index, progress=False)
        for module in ("modality", "cross_modal", "routing"):
            tenant_env.instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=dg.AssetKey([module, COMPLETION_STAGE]), partition=tenant)
            )
    monkeypatch.setattr(sensors, "COUNT_BUDGET_S", 0.0)
    monkeypatch.setattr(sensors, "datetime", _Clock(datetime.now(timezone.utc) + timedelta(seconds=61)))

    def modality_verdicts(result) -> dict[str, str]:
        message = result.skip_reason.skip_message
        return {tenant: message.split(f"{tenant}/modality: ")[1].split(";")[0] for tenant in tenants}

    first = _tick(tenant_env)
    verdicts = modality_verdicts(first)
    assert [verdicts[tenant] for tenant in tenants] == ["0 new labeled traces < 1"] * 12 + [DEFERRED] * 2
    assert json.loads(first.cursor)["resume_from"] == tenants[12]

    second = trace_threshold_sensor(dg.build_sensor_context(
        instance=tenant_env.instance, resources={"config_store": tenant_env.config_store, "phoenix": tenant_env.phoenix},
        cursor=first.cursor,
    ))
    verdicts = modality_verdicts(second)
    # The deferred two first, then from the start again until the budget runs out.
    assert [tenant for tenant in tenants if verdicts[tenant] == DEFERRED] == tenants[10:12]
    assert json.loads(second.cursor)["resume_from"] == tenants[10]
