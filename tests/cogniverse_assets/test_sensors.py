"""``trace_threshold_sensor``'s conditions one by one, against a real Phoenix server."""

import json
import logging
import sqlite3
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from cogniverse_assets import sensors
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.sensors import (
    ATTEMPT_TAG,
    COMPLETION_STAGE,
    DEFERRED,
    evaluate_tenant,
    failure_observations,
    lane_keys,
    tenant_discovery_sensor,
    trace_threshold_sensor,
)
from cogniverse_assets.traffic import emit_traffic
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.phoenix import LaneCountRequest, PhoenixResource
from cogniverse_resources.stack import free_port


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
    checks = evaluate_tenant(
        tenant_env.instance, tenant_env.phoenix, config, datetime.now(timezone.utc) + timedelta(seconds=61)
    )
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

        again = tenant_discovery_sensor(
            dg.build_sensor_context(instance=instance, resources={"config_store": resource})
        )
        assert isinstance(again, dg.SkipReason) and "no new tenants" in again.skip_message

        store.add("initech")
        third = tenant_discovery_sensor(
            dg.build_sensor_context(instance=instance, resources={"config_store": resource})
        )
        assert list(third.dynamic_partitions_requests[0].partition_keys) == ["initech"]


def test_failure_observations_name_tenant_module_and_root_cause():
    from dagster._utils.error import SerializableErrorInfo

    from cogniverse_assets.sensors import error_chain, failure_observations

    root = SerializableErrorInfo("httpx.ConnectError: [Errno 111] Connection refused\n", [], "ConnectError")
    ours = SerializableErrorInfo(
        "cogniverse_resources.phoenix.PhoenixUnavailable: Phoenix at http://x failed\n",
        [],
        "PhoenixUnavailable",
        cause=root,
    )
    error = SerializableErrorInfo("Exceeded max_retries of 3\n", [], "DagsterMaxRetriesExceededError", cause=ours)
    run = dg.DagsterRun(job_name="optimize_tenant", run_id="r1", tags={"dagster/partition": "acme"})
    [observation] = failure_observations(
        run, [("routing__routing_traces", error_chain(error)), ("not_a_lane_step", "x")]
    )
    assert observation.asset_key == dg.AssetKey(["routing", "routing_traces"]) and observation.partition == "acme"
    assert observation.metadata["error"].value == (
        "Exceeded max_retries of 3 <- cogniverse_resources.phoenix.PhoenixUnavailable: Phoenix at http://x failed"
        " <- httpx.ConnectError: [Errno 111] Connection refused"
    )
    # Runs without a tenant (the meta-model) have nothing to record per tenant.
    assert failure_observations(dg.DagsterRun(job_name="j", run_id="r2"), [("routing__routing_traces", "boom")]) == []


@pytest.mark.phoenix_backends
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
    # Side by side (for a Phoenix on Postgres): the same counts, whatever order the answers come in.
    parallel = tenant_env.phoenix.model_copy(update={"count_concurrency": 4})
    assert parallel.count_labeled_routing_spans_many(requests) == (counts, {})


@pytest.mark.phoenix_backends
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
    checks = evaluate_tenant(
        tenant_env.instance, tenant_env.phoenix, config, datetime.now(timezone.utc) + timedelta(seconds=61)
    )
    modality = next(check for check in checks if check.module == "modality")
    assert modality.verdict == "at most 2 new labeled traces < 3"


def test_a_spent_count_budget_defers_lanes_to_the_next_tick_in_turn(tenant_env, monkeypatch):
    # 14 tenants whose three lanes need an exact count (each optimized after its one labeled span);
    # one exact-count request covers 12 tenants × 3 modules, so a zero budget counts 12 and defers 2.
    tenants = [
        tenant_env.add(f"turn{index:02d}", min_samples_for_optimization=1, optimization_interval_seconds=60)
        for index in range(14)
    ]
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

    second = trace_threshold_sensor(
        dg.build_sensor_context(
            instance=tenant_env.instance,
            resources={"config_store": tenant_env.config_store, "phoenix": tenant_env.phoenix},
            cursor=first.cursor,
        )
    )
    verdicts = modality_verdicts(second)
    # The deferred two first, then from the start again until the budget runs out.
    assert [tenant for tenant in tenants if verdicts[tenant] == DEFERRED] == tenants[10:12]
    assert json.loads(second.cursor)["resume_from"] == tenants[10]


def _optimized_with_new_labels(env, count: int, prefix: str, new_labels: set[int]) -> list[str]:
    """``count`` tenants whose three lanes need an exact count: each emitted one labeled span per
    module before its last success; those in ``new_labels`` (by index) one more after it."""
    tenants = [
        env.add(f"{prefix}{index:02d}", min_samples_for_optimization=1, optimization_interval_seconds=60)
        for index in range(count)
    ]
    for index, tenant in enumerate(tenants):
        emit_traffic(env.phoenix, tenant, n=1, feedback_rate=1.0, seed=90 + index, progress=False)
        for module in ("modality", "cross_modal", "routing"):
            env.instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=dg.AssetKey([module, COMPLETION_STAGE]), partition=tenant)
            )
    for index in sorted(new_labels):
        emit_traffic(env.phoenix, tenants[index], n=1, feedback_rate=1.0, seed=190 + index, progress=False)
    return tenants


@pytest.mark.phoenix_backends
def test_the_count_database_decides_every_due_lane_in_one_tick(tenant_env, phoenix_database, monkeypatch):
    # As in the budget test above, 14 tenants need exact counts and the budget is spent before the
    # first one; GraphQL would count 12 and defer 2. Phoenix's database counts all of them at once.
    fresh = {0, 12, 13}  # tenants with a new labeled span per module since their last success
    tenants = _optimized_with_new_labels(tenant_env, 14, "dbcount", fresh)

    def no_graphql_count(*args, **kwargs):
        raise AssertionError("an exact count went through GraphQL")

    monkeypatch.setattr(PhoenixResource, "_count_chunk", no_graphql_count)
    monkeypatch.setattr(sensors, "COUNT_BUDGET_S", 0.0)
    later = datetime.now(timezone.utc) + timedelta(seconds=61)
    monkeypatch.setattr(sensors, "datetime", _Clock(later))
    # Built, not model_copy'd: Dagster rebuilds a resource from its constructor's fields.
    phoenix = PhoenixResource(endpoint=tenant_env.phoenix.endpoint, read_database_url=phoenix_database)

    configs = [tenant_env.config_store.store().get(tenant) for tenant in tenants]
    checks, unreachable = sensors.evaluate_tenants(tenant_env.instance, phoenix, configs, later, count_budget_s=0.0)
    assert unreachable == [] and len(checks) == 3 * len(tenants)
    for check in checks:
        expected = 1 if tenants.index(check.tenant_id) in fresh else 0
        assert check.verdict != DEFERRED and check.new_labeled == expected, (check.name, check.verdict)
        assert check.requested == bool(expected)

    result = _tick(tenant_env, phoenix)
    assert json.loads(result.cursor)["resume_from"] is None
    requested = {(request.tags["tenant"], request.tags["module"]) for request in result.run_requests}
    assert requested == {
        (tenants[index], module) for index in fresh for module in ("modality", "cross_modal", "routing")
    }


def _graphql_requests(monkeypatch) -> list[str]:
    """Records each Phoenix GraphQL request (its query's first line) as bench/sensor_tick.py counts them."""
    made: list[str] = []
    original = PhoenixResource._graphql

    def counted(resource, query, variables):
        made.append(query.strip().splitlines()[0])
        return original(resource, query, variables)

    monkeypatch.setattr(PhoenixResource, "_graphql", counted)
    return made


@pytest.mark.phoenix_backends
def test_the_count_database_replaces_both_graphql_stages_with_the_same_verdicts(
    tenant_env, phoenix_database, monkeypatch
):
    # Lanes of every kind stage 1 and 2 decide: optimized with and without new labels (exact count
    # and upper bound below the threshold), never optimized (stage 1's exact count), inside the interval.
    tenants = _optimized_with_new_labels(tenant_env, 4, "dbsame", {1, 3})
    never = tenant_env.add("dbsame-never", min_samples_for_optimization=1, optimization_interval_seconds=60)
    emit_traffic(tenant_env.phoenix, never, n=2, feedback_rate=1.0, seed=150, progress=False)
    recent = tenant_env.add("dbsame-recent", min_samples_for_optimization=1, optimization_interval_seconds=3600)
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["routing", COMPLETION_STAGE]), partition=recent)
    )
    configs = [tenant_env.config_store.store().get(tenant) for tenant in [*tenants, never, recent]]
    later = datetime.now(timezone.utc) + timedelta(seconds=61)
    made = _graphql_requests(monkeypatch)

    graphql_checks, unreachable = sensors.evaluate_tenants(tenant_env.instance, tenant_env.phoenix, configs, later)
    assert unreachable == [] and made, "the GraphQL path counted without GraphQL"
    made.clear()
    phoenix = PhoenixResource(endpoint=tenant_env.phoenix.endpoint, read_database_url=phoenix_database)
    database_checks, unreachable = sensors.evaluate_tenants(tenant_env.instance, phoenix, configs, later, 0.0)
    assert unreachable == [] and made == []  # neither stage 1's bound nor stage 2's exact counts

    def decided(checks):
        return [(check.name, check.requested, check.attempt, check.verdict.startswith("interval")) for check in checks]

    assert decided(database_checks) == decided(graphql_checks)
    assert sum(check.requested for check in database_checks) == 2 * 3 + 3  # dbsame01, dbsame03 and the new tenant
    for graphql, database in zip(graphql_checks, database_checks):
        if graphql.new_labeled is not None:  # stage 1's bounds below the threshold are not counts
            assert database.new_labeled == graphql.new_labeled, graphql.name
        assert database.verdict != DEFERRED


@pytest.mark.phoenix_backends
def test_the_count_database_budget_defers_the_rest_in_turn(tenant_env, phoenix_database, monkeypatch):
    # One tenant a statement and no budget: the first statement runs, the others wait their turn.
    from cogniverse_resources import phoenix_database as database_reads

    tenants = _optimized_with_new_labels(tenant_env, 3, "dbturn", {0, 1, 2})
    monkeypatch.setattr(database_reads, "LANES_PER_STATEMENT", 3)
    monkeypatch.setattr(sensors, "DATABASE_COUNT_BUDGET_S", -1.0)
    later = datetime.now(timezone.utc) + timedelta(seconds=61)
    monkeypatch.setattr(sensors, "datetime", _Clock(later))
    made = _graphql_requests(monkeypatch)
    phoenix = PhoenixResource(endpoint=tenant_env.phoenix.endpoint, read_database_url=phoenix_database)

    first = _tick(tenant_env, phoenix)
    assert {request.tags["tenant"] for request in first.run_requests} == {tenants[0]}
    assert json.loads(first.cursor)["resume_from"] == tenants[1]
    second = trace_threshold_sensor(
        dg.build_sensor_context(
            instance=tenant_env.instance,
            resources={"config_store": tenant_env.config_store, "phoenix": phoenix},
            cursor=first.cursor,
        )
    )
    assert {request.tags["tenant"] for request in second.run_requests} == {tenants[1]}
    assert json.loads(second.cursor)["resume_from"] == tenants[2]
    assert made == []


def test_a_failing_count_database_falls_back_to_graphql_and_logs_no_password(tenant_env, monkeypatch, caplog):
    (tenant,) = _optimized_with_new_labels(tenant_env, 1, "dbdown", {0})
    password = "s3cret-pw"
    phoenix = PhoenixResource(
        endpoint=tenant_env.phoenix.endpoint,
        read_database_url=f"postgresql://reader:{password}@127.0.0.1:{free_port()}/phoenix",
    )
    later = datetime.now(timezone.utc) + timedelta(seconds=61)
    made = _graphql_requests(monkeypatch)
    log = logging.getLogger("test-sensor-count")
    with caplog.at_level(logging.WARNING, logger=log.name):
        checks, unreachable = sensors.evaluate_tenants(
            tenant_env.instance, phoenix, [tenant_env.config_store.store().get(tenant)], later, 3.0, None, log
        )
    assert unreachable == [] and len(made) == 2  # stage 1's bound, then stage 2's exact count
    assert [(check.module, check.new_labeled, check.requested) for check in checks] == [
        ("modality", 1, True),
        ("cross_modal", 1, True),
        ("routing", 1, True),
    ]
    (record,) = caplog.records
    assert record.getMessage().startswith("exact counts go through Phoenix GraphQL this tick: OperationalError: ")
    assert "postgresql://***@127.0.0.1:" in record.getMessage() and password not in record.getMessage()

    monkeypatch.setattr(sensors, "datetime", _Clock(later))
    result = _tick(tenant_env, phoenix)  # the sensor itself: its runs requested, nothing raised
    assert len(result.run_requests) == 3 and password not in result.cursor


def _fail(env, tenant, module="modality", stage="trained_module", attempt=None, plan_first=True):
    """What a lane run that fails at ``stage`` leaves in Dagster: its plan (when the plan ran before
    the failure) and lane_failure_sensor's observation of the failed step."""
    if plan_first:
        env.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey([module, COMPLETION_STAGE]), partition=tenant)
        )
    tags = {"dagster/partition": tenant, "tenant": tenant, "module": module}
    if attempt is not None:
        tags[ATTEMPT_TAG] = str(attempt)
    run = dg.DagsterRun(job_name="__ephemeral_asset_job__", run_id=f"run-{tenant}-{attempt}", tags=tags)
    (observation,) = failure_observations(run, [(f"{module}__{stage}", "boom")])
    env.instance.report_runless_asset_event(observation)


def _lane(env, tenant, module="modality", seconds_later=61):
    config = env.config_store.store().get(tenant)
    checks = evaluate_tenant(
        env.instance, env.phoenix, config, datetime.now(timezone.utc) + timedelta(seconds=seconds_later)
    )
    return next(check for check in checks if check.module == module)


def test_a_failed_lane_is_retried_on_its_next_interval_without_new_labels(tenant_env, monkeypatch):
    tenant = tenant_env.add("retry", min_samples_for_optimization=3, optimization_interval_seconds=60)
    emit_traffic(tenant_env.phoenix, tenant, n=4, feedback_rate=1.0, seed=81, progress=False, modules=["modality"])
    _fail(tenant_env, tenant)  # the first run (no attempt tag: attempt 1) failed after its plan

    # Inside the interval (measured from the failure) nothing runs; the verdict says what comes next.
    assert _lane(tenant_env, tenant, seconds_later=0).verdict.endswith("then retry 2 of 3 after a failed run")
    lane = _lane(tenant_env, tenant)
    assert lane.verdict == "retrying after a failed run (attempt 2 of 3)" and lane.requested

    monkeypatch.setattr(sensors, "datetime", _Clock(datetime.now(timezone.utc) + timedelta(seconds=61)))
    (request,) = _tick(tenant_env).run_requests
    assert request.tags[ATTEMPT_TAG] == "2" and request.tags["module"] == "modality"
    assert ".retry2-after-" in request.run_key
    assert _tick(tenant_env).run_requests[0].run_key == request.run_key  # deterministic: launched once
    monkeypatch.undo()

    _fail(tenant_env, tenant, attempt=2)
    assert _lane(tenant_env, tenant).verdict == "retrying after a failed run (attempt 3 of 3)"
    _fail(tenant_env, tenant, attempt=3)
    lane = _lane(tenant_env, tenant)
    assert lane.verdict == "3 failed attempts: waiting for new labels (0 new labeled traces < 3)"
    assert not lane.requested
    monkeypatch.setattr(sensors, "datetime", _Clock(datetime.now(timezone.utc) + timedelta(seconds=61)))
    assert f"{tenant}/modality: 3 failed attempts: waiting for new labels" in _skip(_tick(tenant_env))
    monkeypatch.undo()

    # Another block of labels after the last failure starts a new round with a new run key.
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=1.0, seed=82, progress=False, modules=["modality"])
    lane = _lane(tenant_env, tenant)
    assert (lane.verdict, lane.new_labeled, lane.attempt) == ("run", 3, 1)
    request = sensors.run_request(lane, tenant_env.config_store.store().get(tenant))
    assert request.tags[ATTEMPT_TAG] == "1" and f".after-{lane.failure.storage_id}." in request.run_key

    # A success clears the failures.
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["modality", COMPLETION_STAGE]), partition=tenant)
    )
    lane = _lane(tenant_env, tenant)
    assert lane.failure is None and lane.verdict == "0 new labeled traces < 3"


def test_a_run_that_failed_before_its_plan_is_retried_with_a_new_run_key(tenant_env):
    # Never optimized, enough labels: the first run (key never.1) failed while reading traces. Run
    # keys are launched once, so asking for never.1 again would never run the lane again.
    tenant = tenant_env.add("early", min_samples_for_optimization=3, optimization_interval_seconds=60)
    emit_traffic(tenant_env.phoenix, tenant, n=4, feedback_rate=1.0, seed=83, progress=False, modules=["modality"])
    first = _lane(tenant_env, tenant)
    config = tenant_env.config_store.store().get(tenant)
    assert sensors.run_request(first, config).run_key == f"{tenant}.modality.never.1"
    _fail(tenant_env, tenant, stage="routing_traces", attempt=1, plan_first=False)
    lane = _lane(tenant_env, tenant)
    assert lane.verdict == "retrying after a failed run (attempt 2 of 3)"
    assert sensors.run_request(lane, config).run_key != f"{tenant}.modality.never.1"
    # Other modules of the tenant are not affected.
    assert _lane(tenant_env, tenant, module="routing").verdict == "0 new labeled traces < 3"


def test_failure_lookups_cost_the_same_storage_queries_for_any_number_of_tenants(tenant_env, monkeypatch):
    calls = []
    for name in ("get_latest_storage_id_by_partition", "get_asset_event_summary_records", "fetch_observations"):
        original = getattr(tenant_env.instance, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(tenant_env.instance, name, counting)

    def queries(count: int) -> int:
        tenants = [tenant_env.add(f"cost{count}") for _ in range(count)]
        for tenant in tenants:  # every tenant has a success and a newer failure on two stages
            _fail(tenant_env, tenant, stage="evaluation", attempt=1)
            _fail(tenant_env, tenant, module="routing", stage="routing_traces", attempt=1, plan_first=False)
        calls.clear()
        monkeypatch.setattr(sensors, "_latest_events", {})  # both read every stage, as a first tick does
        configs = [tenant_env.config_store.store().get(tenant) for tenant in tenants]
        last = sensors.last_successful_optimizations(tenant_env.instance, tenants)
        failures = sensors.last_lane_failures(tenant_env.instance, tenants, last)
        assert len(failures) == 2 * count
        checks, _ = sensors.due_lanes(configs, last, datetime.now(timezone.utc) + timedelta(hours=2), failures)
        assert sum(check.attempt == 2 for check in checks) == 2 * count
        return len(calls)

    assert queries(1) == queries(6)
    # Above PARTITION_FILTER_MAX tenants storage reads every partition (the 7 tenants above too)
    # and the sensor keeps its own: the same answers, the same number of queries.
    monkeypatch.setattr(sensors, "PARTITION_FILTER_MAX", 0)
    assert queries(1) == queries(6)


def test_a_later_tick_reads_only_the_completions_it_has_not_seen(tenant_env, monkeypatch):
    def complete(tenant: str) -> None:
        tenant_env.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey(["modality", COMPLETION_STAGE]), partition=tenant)
        )

    tenants = [tenant_env.add("seen") for _ in range(3)]
    for tenant in tenants:
        complete(tenant)
    read: list[list[int]] = []
    original = sensors.completion_timestamps

    def recording(instance, key, storage_ids):
        read.append(sorted(storage_ids))
        return original(instance, key, storage_ids)

    monkeypatch.setattr(sensors, "completion_timestamps", recording)
    first = sensors.last_successful_optimizations(tenant_env.instance, tenants)
    assert len(first) == 3 and sum(map(len, read)) == 3
    # The times read from storage's columns are the records' own.
    for (tenant, module), (moment, storage_id) in first.items():
        (record,) = tenant_env.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([module, COMPLETION_STAGE]), storage_ids=[storage_id]), limit=1
        ).records
        assert moment.timestamp() == pytest.approx(record.timestamp, abs=1e-5)
    read.clear()
    assert sensors.last_successful_optimizations(tenant_env.instance, tenants) == first and read == []
    complete(tenants[0])  # a new completion: the only record read
    later = sensors.last_successful_optimizations(tenant_env.instance, tenants)
    assert read == [[later[(tenants[0], "modality")][1]]]
    assert later[(tenants[0], "modality")][0] >= first[(tenants[0], "modality")][0]
    assert {lane: value for lane, value in later.items() if lane[0] != tenants[0]} == {
        lane: value for lane, value in first.items() if lane[0] != tenants[0]
    }
    monkeypatch.setattr(sensors, "_completion_times", {})  # the same answers with nothing remembered
    assert sensors.last_successful_optimizations(tenant_env.instance, tenants) == later
    monkeypatch.setattr(sensors, "_completion_times", {})  # and when the storage ids take several queries
    monkeypatch.setattr(sensors, "STORAGE_IDS_PER_QUERY", 2)
    assert sensors.last_successful_optimizations(tenant_env.instance, tenants) == later


def test_a_later_tick_reads_only_the_events_written_since_in_one_query_per_event_type(tenant_env, monkeypatch):
    monkeypatch.setattr(sensors, "_latest_events", {})
    tenants = [tenant_env.add("since") for _ in range(3)]
    _fail(tenant_env, tenants[0], stage="evaluation", attempt=1)
    calls: list[str] = []
    for name in ("get_latest_storage_id_by_partition", "get_asset_event_summary_records"):
        original = getattr(tenant_env.instance, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            # The read of the events written since the last one (``_read_new_events``).
            calls.append("events since" if kwargs.get("after_storage_id") is not None else _name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(tenant_env.instance, name, counting)

    def lookups() -> tuple[dict, dict]:
        last = sensors.last_successful_optimizations(tenant_env.instance, tenants)
        return last, sensors.last_lane_failures(tenant_env.instance, tenants, last)

    first_last, first_failures = lookups()  # the first call reads every stage
    assert calls.count("get_latest_storage_id_by_partition") == 3 + 3 * len(lane_keys("modality"))
    assert set(first_failures) == {(tenants[0], "modality")}
    # Between two ticks: a lane fails on another stage, another completes, the failed one recovers.
    _fail(tenant_env, tenants[1], module="routing", stage="routing_traces", attempt=1)
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["cross_modal", COMPLETION_STAGE]), partition=tenants[2])
    )
    tenant_env.instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(["modality", COMPLETION_STAGE]), partition=tenants[0])
    )
    calls.clear()
    later_last, later_failures = lookups()
    # One read per event type, no stage read again; between them, the times of the three new
    # completions, one read per module (the failed routing run had completed its plan).
    assert calls == ["events since"] + ["get_asset_event_summary_records"] * 3 + ["events since"]
    assert set(later_failures) == {(tenants[1], "routing")}
    assert later_last[(tenants[2], "cross_modal")][1] > 0 and later_last != first_last
    monkeypatch.setattr(sensors, "_latest_events", {})  # the same answers with nothing remembered
    assert lookups() == (later_last, later_failures)
    # More new events than one read takes: every stage is read again, with the same answers.
    monkeypatch.setattr(sensors, "NEW_EVENTS_READ_MAX", 0)
    _fail(tenant_env, tenants[2], stage="evaluation", attempt=1)
    calls.clear()
    last, failures = lookups()
    assert "get_latest_storage_id_by_partition" in calls and set(failures) == {
        (tenants[1], "routing"),
        (tenants[2], "modality"),
    }


@pytest.mark.phoenix_backends
def test_the_count_follows_the_ingestion_label_rules(tenant_env):
    from opentelemetry.trace import Status, StatusCode

    from cogniverse_assets.assets.routing_traces import routing_traces_assets
    from cogniverse_resources import trace_contract as tc
    from cogniverse_resources.tracer import Feedback, RoutingDecision, RoutingTracer

    tenant = tenant_env.add("rules", min_samples_for_optimization=100, min_trace_confidence=0.7)
    tracer = RoutingTracer(tenant_env.phoenix, tenant)

    def decision(query, label="video", confidence=0.2, success=True):
        return RoutingDecision("modality", query, label, confidence, 5.0, "v0", success=success)

    def raw(query, **attributes):  # a span the RoutingDecision API would not write
        with tracer._tracer.start_as_current_span(
            tc.SPAN_NAME, attributes={tc.MODULE: "modality", tc.QUERY: query, **attributes}
        ) as span:
            span.set_status(Status(StatusCode.OK))
            return format(span.get_span_context().span_id, "016x")

    ids = {
        "human": tracer.record(decision("human says image")),
        "llm": tracer.record(decision("llm says audio")),
        "router": tracer.record(decision("confident and successful", confidence=0.9)),
        "non_canonical_feedback": tracer.record(decision("annotated with nonsense")),
        "score_only_feedback": tracer.record(decision("a score, no label")),
        "unsure": tracer.record(decision("successful but unsure")),
        "no_answer": raw("no routing.modality", **{tc.AGENT_SUCCESS: True, tc.CONFIDENCE: 0.95}),
        "bad_answer": raw("a hologram", **{tc.MODALITY: "hologram", tc.AGENT_SUCCESS: True, tc.CONFIDENCE: 0.95}),
    }
    tracer.annotate(
        [
            Feedback(ids["human"], "image", "HUMAN"),
            Feedback(ids["llm"], "audio", "LLM"),
            Feedback(ids["non_canonical_feedback"], "smell-o-vision", "HUMAN"),
        ]
    )
    tenant_env.phoenix.client().spans.log_span_annotations(
        span_annotations=[
            {
                "span_id": ids["score_only_feedback"],
                "name": tc.FEEDBACK_ANNOTATION,
                "annotator_kind": "HUMAN",
                "result": {"score": 1.0},
                "identifier": "human",
            }
        ],
        sync=True,
    )
    tracer.shutdown()
    tenant_env.phoenix.wait_for_spans(tenant, ids.values())

    result = tenant_env.materialize([routing_traces_assets[0]], tenant)
    (event,) = result.asset_materializations_for_node(routing_traces_assets[0].op.name)
    assert event.metadata["labeled_examples"].value == 3  # human, llm, router

    # Stage 1 (never optimized: the count since the lookback start is exact) and stage 2 agree.
    assert _lane(tenant_env, tenant, seconds_later=0).new_labeled == 3
    counts, errors = tenant_env.phoenix.count_labeled_routing_spans_many(
        {tenant: LaneCountRequest({"modality": None}, 0.7)}
    )
    assert errors == {} and counts[tenant] == {"modality": 3}


def _window_around(now: datetime, inside: bool) -> str:
    """A two-hour UTC window that holds ``now`` (or ends an hour before it)."""
    start = now - timedelta(hours=1) if inside else now - timedelta(hours=3)
    return f"{start:%H:%M}-{start + timedelta(hours=2):%H:%M}"


def test_a_tenant_inside_its_optimization_window_runs(tenant_env):
    now = datetime.now(timezone.utc)
    tenant = tenant_env.add("win-in", min_samples_for_optimization=2, optimization_window=_window_around(now, True))
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=1.0, seed=16, progress=False, modules=["modality"])
    result = _tick(tenant_env)
    assert [request.tags["module"] for request in result.run_requests] == ["modality"]


def test_a_tenant_outside_its_optimization_window_waits_and_is_told_when_it_opens(tenant_env, monkeypatch):
    now = datetime.now(timezone.utc)
    window = _window_around(now, False)
    tenant = tenant_env.add("win-out", min_samples_for_optimization=2, optimization_window=window)
    emit_traffic(tenant_env.phoenix, tenant, n=3, feedback_rate=1.0, seed=17, progress=False, modules=["modality"])
    counted = []
    original = PhoenixResource.count_labeled_routing_spans_since
    monkeypatch.setattr(
        PhoenixResource,
        "count_labeled_routing_spans_since",
        lambda self, tenant_ids, *args: counted.extend(tenant_ids) or original(self, tenant_ids, *args),
    )
    message = _skip(_tick(tenant_env))
    assert f"{tenant}/modality: outside optimization window {window} UTC (opens in 2" in message
    assert tenant not in counted  # a closed window costs Phoenix nothing
