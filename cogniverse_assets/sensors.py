"""Sensors: keep the ``tenants`` partitions in sync with the config store, start a module's
optimization lane for a tenant when it has enough new labeled traces and its interval has passed
(or, after a failed run, again on its next interval: up to ``MAX_LANE_RETRIES`` attempts), and
record failed lane steps."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

import dagster as dg
from dagster import DagsterEventType

from cogniverse_assets.assets.lane import COMPLETION_STAGE, lane_keys
from cogniverse_assets.freshness import freshness_events, judge_freshness
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.phoenix import LaneCountRequest, PhoenixResource, PhoenixUnavailable
from cogniverse_resources.phoenix_database import PhoenixDatabase, PhoenixDatabaseUnavailable
from cogniverse_resources.tenant import InvalidTenantId, RoutingConfig, validate_tenant_id

UNREACHABLE = "Phoenix unreachable"  # the verdict of a lane whose tenant's Phoenix did not answer
DEFERRED = "exact count deferred to a later tick"  # the verdict of a lane the tick's count budget did not reach
# Phoenix counting stops starting new requests after this long, so a tick stays well inside
# Dagster's 60 s sensor timeout; the remaining lanes are counted on the following ticks.
COUNT_BUDGET_S = 3.0
# With ``PhoenixResource.read_database_url`` set, the shared Phoenix's due lanes are all counted
# exactly in its database (``count_in_database``), with no GraphQL bound first; no statement starts
# after this long. Worst tick, well inside Dagster's 60 s sensor timeout: this budget plus one
# statement's timeout (phoenix_database.STATEMENT_TIMEOUT_S, 6 s; or its 5 s connect timeout), then,
# if the database failed, today's GraphQL path (about 16 s of upper bounds at 10,000 tenants plus
# COUNT_BUDGET_S), plus about 7 s of storage and config reads: 8 + 6 + 16 + 3 + 7 = 40 s. Measured,
# 30,000 lanes take about 1.5 s in the database (docs/benchmarks.md).
DATABASE_COUNT_BUDGET_S = 8.0
MAX_SKIP_REASONS = 60  # a tick's skip message lists this many tenant × module verdicts at most
RUN = "run"  # the verdict of a lane with enough new labeled traces
# A lane whose run failed is run again on its next interval without new labels, until this many
# consecutive attempts have failed; then it waits for another min_samples_for_optimization new
# labeled traces (counted from the last failure), which start a new round of attempts.
MAX_LANE_RETRIES = 3
ATTEMPT_TAG = "attempt"  # run tag: which attempt of its round a lane run is (1 = started by new labels)
# Storage queries name the tenants' partitions up to this many; above, they read every partition of
# the asset and the sensor keeps its tenants': SQLAlchemy compiles one bound parameter per name,
# about 0.17 s a query at 10,000 tenants, 27 queries a tick (4.5 s of a 6.9 s no-op tick).
PARTITION_FILTER_MAX = 500
# When each lane's latest completion happened, by storage id, kept from tick to tick in the code
# server's process (per event storage and asset): an event's time never changes, and reading one
# materialization record per optimized lane for it was 80 % of a no-op tick at 3,000 tenants. The
# times are read from storage's indexed columns (``completion_timestamps``), never from the records.
_completion_times: dict[tuple[str, dg.AssetKey], dict[int, float]] = {}
# Each lane stage's latest event per tenant, kept from tick to tick in the same way (per event
# storage and event type): a tick then reads only the events written since the last one, in one
# query, instead of one query per lane stage (27 a tick, each a new connection on Postgres, where
# Dagster's storage holds no connection pool). More new events than this at once (a restart after a
# burst, say): the tick reads every stage again.
_latest_events: dict[tuple[str, DagsterEventType], LatestEvents] = {}
NEW_EVENTS_READ_MAX = 5000
# Storage ids named in one query: SQLite allows 32,766 bound parameters a statement.
STORAGE_IDS_PER_QUERY = 5000


@dg.sensor(
    name="tenant_discovery_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds every tenant of the config store as a `tenants` partition.",
)
def tenant_discovery_sensor(context: dg.SensorEvaluationContext, config_store: ConfigStoreResource):
    known = set(context.instance.get_dynamic_partitions(tenants_partitions.name))
    new, rejected = [], []
    for tenant_id in config_store.store().tenant_ids():
        try:
            validate_tenant_id(tenant_id)
        except InvalidTenantId:
            # A record written around the CLI's validation must never become a partition key.
            rejected.append(tenant_id)
            continue
        if tenant_id not in known:
            new.append(tenant_id)
    if rejected:
        context.log.warning(f"ignored invalid tenant ids in the config store: {rejected!r}")
    if not new:
        return dg.SkipReason(f"no new tenants ({len(known)} known)")
    context.log.info(f"adding tenant partitions: {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[tenants_partitions.build_add_request(new)])


@dataclass(frozen=True)
class LaneFailure:
    """The latest failed step of a lane, as ``lane_failure_sensor`` recorded it."""

    moment: datetime
    storage_id: int
    attempt: int  # the failed run's ATTEMPT_TAG (1 when it had none: a backfill, a UI launch)
    run_id: str


@dataclass
class LaneCheck:
    """One tenant × module lane: when it last completed, whether its last run failed and, once
    decided, its verdict. The one mutable record of a tick: each step below writes the verdicts it
    can decide."""

    tenant_id: str
    module: str
    last_success: datetime | None
    last_success_id: int | None
    new_labeled: int | None = None
    verdict: str = ""
    failure: LaneFailure | None = None  # set only when the lane's last run failed (after its last success)
    attempt: int = 1  # the attempt a run requested now would be

    @property
    def name(self) -> str:
        return f"{self.tenant_id}/{self.module}"

    @property
    def retries_spent(self) -> bool:
        return self.failure is not None and self.failure.attempt >= MAX_LANE_RETRIES

    @property
    def last_attempt(self) -> datetime | None:
        """When the lane last finished, successfully or not: its interval runs from here."""
        moments = [moment for moment in (self.last_success, self.failure and self.failure.moment) if moment]
        return max(moments) if moments else None

    @property
    def count_from(self) -> datetime | None:
        """Where its new labeled traces start: the last success, or the last failure once the
        retries are spent (the labels the failed attempts had do not start another round)."""
        return self.failure.moment if self.retries_spent else self.last_success

    @property
    def requested(self) -> bool:
        return self.verdict == RUN or self.attempt > 1

    def waiting(self, reason: str) -> str:
        """A not-enough-labels verdict, saying so when the lane waits after spent retries."""
        if self.retries_spent:
            return f"{self.failure.attempt} failed attempts: waiting for new labels ({reason})"
        return reason

    def counted(self, new_labeled: int, needed: int) -> None:
        """Decide the lane from an exact count of its new labeled traces."""
        self.new_labeled = new_labeled
        self.verdict = RUN if new_labeled >= needed else self.waiting(f"{new_labeled} new labeled traces < {needed}")


@dataclass(frozen=True)
class DueTenant:
    """A tenant with lanes whose interval has passed: what counting their new traces needs."""

    config: RoutingConfig
    lanes: tuple[LaneCheck, ...]
    lookback_start: datetime  # Phoenix traces older than this never count

    @property
    def tenant_id(self) -> str:
        return self.config.tenant_id

    @property
    def endpoint(self) -> tuple[str, str]:
        """The tenant's Phoenix: (endpoint, name of its key variable); empty for the shared one."""
        return self.config.phoenix_endpoint or "", self.config.phoenix_api_key_env or ""

    @property
    def needed(self) -> int:
        return self.config.min_samples_for_optimization

    def since(self, lane: LaneCheck) -> datetime:
        """Where the lane's new traces start: ``lane.count_from``, or the lookback start if later."""
        if lane.count_from is None:
            return self.lookback_start
        return max(lane.count_from, self.lookback_start)

    def exact_count_request(self, lanes: Iterable[LaneCheck]) -> LaneCountRequest:
        """The exact count of ``lanes``, each since its own last success (``since``)."""
        return LaneCountRequest({lane.module: self.since(lane) for lane in lanes}, self.config.min_trace_confidence)


@dataclass(frozen=True)
class UndecidedTenant:
    """A tenant's lanes that the upper bound could not rule out, and their exact count to ask for."""

    tenant: DueTenant
    lanes: tuple[LaneCheck, ...]
    request: LaneCountRequest  # each lane counted since its own last success


@dataclass(frozen=True)
class UpperBounds:
    """Stage 1's result: what is left for stage 2, and the tenants whose Phoenix did not answer."""

    undecided: tuple[UndecidedTenant, ...]
    unreachable: dict[str, str]  # tenant → error


@dataclass
class LatestEvents:
    """The latest storage id of one event type per asset key and tenant partition, complete up to
    ``watermark`` (a storage id)."""

    watermark: int
    by_key: dict[dg.AssetKey, dict[str, int]]


def latest_storage_ids_by_key(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey], event_type: DagsterEventType, tenant_ids: list[str]
) -> dict[dg.AssetKey, dict[str, int]]:
    """``latest_storage_ids`` of every key in ``keys``. With a persistent event storage, the answer
    is kept for the next call (``_latest_events``), which reads only the events of ``event_type``
    written since, in one query."""
    storage = _event_storage_identity(instance)
    if storage is None:
        return {key: latest_storage_ids(instance, key, event_type, tenant_ids) for key in keys}
    cache_key = (storage, event_type)
    known = _latest_events.get(cache_key)
    if known is None or not set(keys) <= set(known.by_key) or not _read_new_events(instance, known, event_type):
        # Read the watermark first: an event written during the full read is then read again next time.
        newest = instance.get_asset_event_summary_records(event_type, limit=1)
        watermark = newest[0].storage_id if newest else 0
        known = LatestEvents(watermark, {key: latest_storage_ids(instance, key, event_type, None) for key in keys})
        _latest_events[cache_key] = known
    wanted = set(tenant_ids)
    return {
        key: {tenant_id: storage_id for tenant_id, storage_id in known.by_key[key].items() if tenant_id in wanted}
        for key in keys
    }


def _read_new_events(instance: dg.DagsterInstance, known: LatestEvents, event_type: DagsterEventType) -> bool:
    """Fold the events of ``event_type`` written after ``known.watermark`` into ``known``. False
    (``known`` unchanged) when there are more than ``NEW_EVENTS_READ_MAX`` of them. Summary records:
    storage's indexed columns, no record deserialized."""
    records = instance.get_asset_event_summary_records(
        event_type, after_storage_id=known.watermark, limit=NEW_EVENTS_READ_MAX + 1, ascending=True
    )
    if len(records) > NEW_EVENTS_READ_MAX:
        return False
    for record in records:
        latest = known.by_key.get(record.asset_key)
        if latest is not None and record.partition:
            latest[record.partition] = max(latest.get(record.partition, 0), record.storage_id)
        known.watermark = max(known.watermark, record.storage_id)
    return True


def latest_storage_ids(
    instance: dg.DagsterInstance, key: dg.AssetKey, event_type: DagsterEventType, tenant_ids: list[str] | None
) -> dict[str, int]:
    """``get_latest_storage_id_by_partition`` of ``key`` for ``tenant_ids`` (``{tenant: storage id}``;
    ``None``: every partition): one query, naming the partitions only up to ``PARTITION_FILTER_MAX``
    tenants."""
    if tenant_ids is None:
        return dict(instance.get_latest_storage_id_by_partition(key, event_type))
    wanted = set(tenant_ids)
    named = wanted if len(wanted) <= PARTITION_FILTER_MAX else None
    latest = instance.get_latest_storage_id_by_partition(key, event_type, partitions=named)
    return {tenant_id: storage_id for tenant_id, storage_id in latest.items() if tenant_id in wanted}


def last_successful_optimizations(
    instance: dg.DagsterInstance, tenant_ids: list[str]
) -> dict[tuple[str, str], tuple[datetime, int]]:
    """When each tenant's lanes last completed, from Dagster's materialization history:
    ``{(tenant, module): (time, storage id)}``. Storage is asked per module for all tenants at once
    on the first call, then once for the materializations written since
    (``latest_storage_ids_by_key``), so the cost does not grow with the number of tenants. Only the
    completions a previous call in this process has not seen are read (``_completion_times``)."""
    found: dict[tuple[str, str], tuple[datetime, int]] = {}
    storage = _event_storage_identity(instance)
    keys = {module: dg.AssetKey([module, COMPLETION_STAGE]) for module in ROUTING_MODULES}
    latest_by_key = latest_storage_ids_by_key(
        instance, list(keys.values()), DagsterEventType.ASSET_MATERIALIZATION, tenant_ids
    )
    for module, key in keys.items():
        latest = latest_by_key[key]
        if not latest:
            continue
        known = _completion_times.get((storage, key), {}) if storage else {}
        stamps = {storage_id: known[storage_id] for storage_id in latest.values() if storage_id in known}
        unseen = [storage_id for storage_id in latest.values() if storage_id not in stamps]
        if unseen:
            stamps.update(completion_timestamps(instance, key, unseen))
        if storage:  # only the latest completions: the cache stays one entry per lane
            _completion_times[(storage, key)] = stamps
        for tenant_id, storage_id in latest.items():
            if storage_id in stamps:
                moment = datetime.fromtimestamp(stamps[storage_id], tz=timezone.utc)
                found[(tenant_id, module)] = (moment, storage_id)
    return found


def completion_timestamps(instance: dg.DagsterInstance, key: dg.AssetKey, storage_ids: list[int]) -> dict[int, float]:
    """When each of ``key``'s materializations in ``storage_ids`` happened: ``{storage id: POSIX
    time}``, read from storage's indexed columns. Deserializing each record instead (its metadata
    included) cost about 0.35 ms a completion (1.04 s of a profiled tick at 3,000 tenants)."""
    stamps: dict[int, float] = {}
    for start in range(0, len(storage_ids), STORAGE_IDS_PER_QUERY):
        chunk = storage_ids[start : start + STORAGE_IDS_PER_QUERY]
        records = instance.get_asset_event_summary_records(
            DagsterEventType.ASSET_MATERIALIZATION, asset_key=key, storage_ids=chunk, limit=len(chunk)
        )
        stamps.update({record.storage_id: record.timestamp for record in records})
    return stamps


def _event_storage_identity(instance: dg.DagsterInstance) -> str | None:
    """Which event storage ``instance`` reads (its configuration); ``None`` for an in-memory one,
    whose storage ids a later instance would hand out again."""
    return None if instance.is_ephemeral else repr(instance.get_ref().event_storage_data)


def last_lane_failures(
    instance: dg.DagsterInstance, tenant_ids: list[str], last: dict[tuple[str, str], tuple[datetime, int]]
) -> dict[tuple[str, str], LaneFailure]:
    """The lanes whose last run failed: ``{(tenant, module): failure}`` for each lane whose latest
    failure observation (``lane_failure_sensor``, on any stage of the lane) is newer than its last
    success in ``last``. A failure after the plan (in ``trained_module``, ``evaluation`` or
    ``deployment``) counts too: its observation comes after the failed run's plan.

    Storage is asked once per lane stage for all tenants at once on the first call, then once for
    the observations written since (``latest_storage_ids_by_key``), plus one read per stage that
    holds a failure newer than its lane's success (usually none), so the cost does not grow with the
    number of tenants. A run that fails without a failed step (its worker died) leaves no
    observation and is not retried."""
    if not tenant_ids:
        return {}
    latest: dict[tuple[str, str], tuple[int, dg.AssetKey]] = {}
    keys = {key: module for module in ROUTING_MODULES for key in lane_keys(module)}
    latest_by_key = latest_storage_ids_by_key(instance, list(keys), DagsterEventType.ASSET_OBSERVATION, tenant_ids)
    for key, module in keys.items():
        for tenant_id, storage_id in latest_by_key[key].items():
            lane = (tenant_id, module)
            success_id = last[lane][1] if lane in last else -1
            if storage_id > success_id and storage_id > latest.get(lane, (-1, key))[0]:
                latest[lane] = (storage_id, key)
    wanted: dict[dg.AssetKey, dict[int, tuple[str, str]]] = {}
    for lane, (storage_id, key) in latest.items():
        wanted.setdefault(key, {})[storage_id] = lane
    found: dict[tuple[str, str], LaneFailure] = {}
    for key, lanes in wanted.items():
        records = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=list(lanes)), limit=len(lanes)
        ).records
        for record in records:
            metadata = {name: value.value for name, value in record.asset_observation.metadata.items()}
            if metadata.get("status") != "failed":
                continue
            attempt = metadata.get(ATTEMPT_TAG)
            found[lanes[record.storage_id]] = LaneFailure(
                moment=datetime.fromtimestamp(record.timestamp, tz=timezone.utc),
                storage_id=record.storage_id,
                attempt=attempt if isinstance(attempt, int) and attempt > 0 else 1,
                run_id=str(metadata.get("run_id") or record.run_id),
            )
    return found


def rotation(tenant_ids: Iterable[str], resume_from: str | None) -> list[str]:
    """Tenants in order, starting at ``resume_from`` (where the last tick's budget ran out) and
    wrapping around."""
    ordered = sorted(tenant_ids)
    if resume_from is None:
        return ordered
    return [tenant for tenant in ordered if tenant >= resume_from] + [
        tenant for tenant in ordered if tenant < resume_from
    ]


def due_lanes(
    configs: list[RoutingConfig],
    last: dict[tuple[str, str], tuple[datetime, int]],
    now: datetime,
    failures: dict[tuple[str, str], LaneFailure] | None = None,
) -> tuple[list[LaneCheck], list[DueTenant]]:
    """Every lane of every tenant, and the tenants with lanes to count. Lanes of disabled tenants,
    of tenants outside their ``optimization_window``, lanes inside their interval (from their last
    success or failure) and lanes to retry after a failed run (``failures``: from
    ``last_lane_failures``) get their verdict here, without asking Phoenix."""
    failures = failures or {}
    checks: list[LaneCheck] = []
    due: list[DueTenant] = []
    for config in configs:
        lanes = [
            LaneCheck(
                config.tenant_id,
                module,
                *last.get((config.tenant_id, module), (None, None)),
                failure=failures.get((config.tenant_id, module)),
            )
            for module in ROUTING_MODULES
        ]
        checks += lanes
        if not config.enable_auto_optimization:
            for lane in lanes:
                lane.verdict = "auto-optimization disabled"
            continue
        window = config.window()
        if window is not None and not window.contains(now):
            for lane in lanes:
                lane.verdict = window.closed_reason(now)
            continue
        interval = timedelta(seconds=config.optimization_interval_seconds)
        waiting = []
        for lane in lanes:
            retry = lane.failure is not None and not lane.retries_spent
            if lane.last_attempt is not None and now - lane.last_attempt < interval:
                remaining = interval - (now - lane.last_attempt)
                lane.verdict = f"interval not passed ({int(remaining.total_seconds())}s left)"
                if retry:
                    lane.verdict += f", then retry {lane.failure.attempt + 1} of {MAX_LANE_RETRIES} after a failed run"
            elif retry:
                lane.attempt = lane.failure.attempt + 1
                lane.verdict = f"retrying after a failed run (attempt {lane.attempt} of {MAX_LANE_RETRIES})"
            else:
                waiting.append(lane)
        if waiting:
            due.append(DueTenant(config, tuple(waiting), now - timedelta(hours=config.phoenix_lookback_hours)))
    return checks, due


def count_upper_bounds(phoenix: PhoenixResource, due: list[DueTenant]) -> UpperBounds:
    """Stage 1, the batched upper-bound count: one batched Phoenix count per group of tenants that
    share an endpoint, a lookback start and a confidence threshold, since that lookback start.

    Counts sharing a start are cheap for Phoenix, however many tenants. A lane never optimized
    within the lookback gets its exact count; for the others the count is an upper bound, and a
    bound below the threshold rules the lane out. The rest are left for stage 2.
    """
    groups: dict[tuple[tuple[str, str], datetime, float], list[DueTenant]] = {}
    for tenant in due:
        key = (tenant.endpoint, tenant.lookback_start, tenant.config.min_trace_confidence)
        groups.setdefault(key, []).append(tenant)
    undecided: list[UndecidedTenant] = []
    unreachable: dict[str, str] = {}
    for (endpoint, lookback_start, min_confidence), tenants in groups.items():
        try:
            bounds = phoenix.for_tenant(endpoint[0] or None, endpoint[1] or None).count_labeled_routing_spans_since(
                [tenant.tenant_id for tenant in tenants], ROUTING_MODULES, lookback_start, min_confidence
            )
        except PhoenixUnavailable as error:
            unreachable.update(dict.fromkeys((tenant.tenant_id for tenant in tenants), str(error)))
            continue
        for tenant in tenants:
            lanes = []
            for lane in tenant.lanes:
                bound = bounds[tenant.tenant_id][lane.module]
                if tenant.since(lane) == lookback_start:  # no success within the lookback: the count is exact
                    lane.counted(bound, tenant.needed)
                elif bound < tenant.needed:
                    lane.verdict = lane.waiting(f"at most {bound} new labeled traces < {tenant.needed}")
                else:
                    lanes.append(lane)
            if lanes:
                undecided.append(UndecidedTenant(tenant, tuple(lanes), tenant.exact_count_request(lanes)))
    return UpperBounds(tuple(undecided), unreachable)


def count_in_database(
    phoenix: PhoenixResource,
    due: list[DueTenant],
    resume_from: str | None,
    log: logging.Logger | dg.DagsterLogManager,
) -> list[DueTenant]:
    """Exact counts of every due lane of the shared Phoenix's tenants, read from its database when
    ``phoenix.read_database_url`` is set, instead of stage 1's GraphQL bound and stage 2: tenants in
    ``rotation`` order from ``resume_from``, until ``DATABASE_COUNT_BUDGET_S``; the lanes it did not
    reach get the verdict ``DEFERRED``. Returns the tenants left for the two GraphQL stages: those
    with their own ``phoenix_endpoint``, and every tenant when the database fails (logged; the
    message holds no password)."""
    shared = {tenant.tenant_id: tenant for tenant in due if not tenant.config.phoenix_endpoint}
    if not phoenix.read_database_url or not shared:
        return due
    order = rotation(shared, resume_from)
    requests = {tenant_id: shared[tenant_id].exact_count_request(shared[tenant_id].lanes) for tenant_id in order}
    counter = PhoenixDatabase(phoenix.read_database_url, phoenix.project_prefix)
    try:
        counts = counter.count(requests, time.monotonic() + DATABASE_COUNT_BUDGET_S)
    except PhoenixDatabaseUnavailable as error:
        log.warning(f"exact counts go through Phoenix GraphQL this tick: {error}")
        return due
    apply_exact_counts({tenant_id: (tenant.lanes, tenant.needed) for tenant_id, tenant in shared.items()}, counts)
    return [tenant for tenant in due if tenant.tenant_id not in shared]


def count_exactly(
    phoenix: PhoenixResource, undecided: Iterable[UndecidedTenant], deadline: float | None, resume_from: str | None
) -> dict[str, str]:
    """Stage 2, exact counts on a budget: each remaining lane counted since its own last success,
    tenants in ``rotation`` order from ``resume_from``, until the ``deadline`` (``time.monotonic()``).
    Returns the tenants whose Phoenix did not answer (tenant → error).

    These counts are expensive for Phoenix's GraphQL (each has its own start), so a tick stops
    starting them at the deadline; the lanes not reached get the verdict ``DEFERRED`` and the
    sensor's cursor makes the next tick start with them.
    """
    by_endpoint: dict[tuple[str, str], dict[str, UndecidedTenant]] = {}
    for item in undecided:
        by_endpoint.setdefault(item.tenant.endpoint, {})[item.tenant.tenant_id] = item
    unreachable: dict[str, str] = {}
    for endpoint, tenants in by_endpoint.items():
        order = rotation(tenants, resume_from)
        requests = {tenant_id: tenants[tenant_id].request for tenant_id in order}
        try:
            tenant_phoenix = phoenix.for_tenant(endpoint[0] or None, endpoint[1] or None)
        except PhoenixUnavailable as error:  # a refused endpoint (not allowed, no key) fails only its tenants
            unreachable.update(dict.fromkeys(order, str(error)))
            continue
        counts, errors = tenant_phoenix.count_labeled_routing_spans_many(requests, deadline)
        unreachable.update(errors)
        apply_exact_counts(
            {
                tenant_id: (item.lanes, item.tenant.needed)
                for tenant_id, item in tenants.items()
                if tenant_id not in errors
            },
            counts,
        )
    return unreachable


def apply_exact_counts(
    lanes_by_tenant: Mapping[str, tuple[Iterable[LaneCheck], int]], counts: Mapping[str, Mapping[str, int]]
) -> None:
    """Give every lane of ``lanes_by_tenant`` (tenant → its lanes and the labeled traces it needs)
    its verdict: from its exact count where ``counts`` has the tenant, else ``DEFERRED`` (the count
    budget ran out before it; the sensor's cursor makes the next tick start there)."""
    for tenant_id, (lanes, needed) in lanes_by_tenant.items():
        for lane in lanes:
            if tenant_id in counts:
                lane.counted(counts[tenant_id][lane.module], needed)
            else:
                lane.verdict = DEFERRED


def evaluate_tenants(
    instance: dg.DagsterInstance,
    phoenix: PhoenixResource,
    configs: list[RoutingConfig],
    now: datetime,
    count_budget_s: float | None = None,
    resume_from: str | None = None,
    log: logging.Logger | dg.DagsterLogManager | None = None,
) -> tuple[list[LaneCheck], list[str]]:
    """Check every module of every tenant: the lanes that should run, and the tenants whose Phoenix
    could not be reached (``"tenant: error"``). Storage and Phoenix are asked in batches, not once
    per tenant: ``due_lanes``, then ``count_upper_bounds`` (stage 1) and ``count_exactly``
    (stage 2) with ``count_budget_s`` seconds from now, resuming at tenant ``resume_from``.
    With ``read_database_url``, the shared Phoenix's tenants are counted in its database instead
    (``count_in_database``). Every due lane of an unreachable tenant gets the verdict
    ``UNREACHABLE``. ``log`` (default: Dagster's logger) hears when the database count falls back
    to GraphQL.
    """
    deadline = time.monotonic() + count_budget_s if count_budget_s is not None else None
    tenant_ids = [config.tenant_id for config in configs]
    last = last_successful_optimizations(instance, tenant_ids)
    checks, due = due_lanes(configs, last, now, last_lane_failures(instance, tenant_ids, last))
    staged = count_in_database(phoenix, due, resume_from, log or dg.get_dagster_logger())
    bounds = count_upper_bounds(phoenix, staged)
    unreachable = {**bounds.unreachable, **count_exactly(phoenix, bounds.undecided, deadline, resume_from)}
    for tenant in due:
        if tenant.tenant_id in unreachable:
            for lane in tenant.lanes:
                lane.verdict = UNREACHABLE
    return checks, [f"{tenant_id}: {message}" for tenant_id, message in unreachable.items()]


def evaluate_tenant(
    instance: dg.DagsterInstance, phoenix: PhoenixResource, config: RoutingConfig, now: datetime
) -> list[LaneCheck]:
    """``evaluate_tenants`` for one tenant; raises ``PhoenixUnavailable`` if its Phoenix is down."""
    checks, unreachable = evaluate_tenants(instance, phoenix, [config], now)
    if unreachable:
        raise PhoenixUnavailable(unreachable[0])
    return checks


def lane_tags(tenant_id: str, module: str, attempt: int, trigger: str) -> dict[str, str]:
    """The tags of a lane run, whoever starts it (this sensor, ``cogniverse optimize``)."""
    return {"tenant": tenant_id, "module": module, "trigger": trigger, ATTEMPT_TAG: str(attempt)}


def run_request(check: LaneCheck, config: RoutingConfig) -> dg.RunRequest:
    # Deterministic: one request per (last success, block of new samples), per retried failure, and
    # per block of samples after spent retries; Dagster launches a run key once.
    base = f"{check.tenant_id}.{check.module}.{check.last_success_id or 'never'}"
    if check.attempt > 1:
        run_key = f"{base}.retry{check.attempt}-after-{check.failure.storage_id}"
    else:
        block = check.new_labeled // config.min_samples_for_optimization
        run_key = f"{base}.{block}" if check.failure is None else f"{base}.after-{check.failure.storage_id}.{block}"
    return dg.RunRequest(
        run_key=run_key,
        partition_key=check.tenant_id,
        asset_selection=lane_keys(check.module),
        tags=lane_tags(check.tenant_id, check.module, check.attempt, "trace_threshold_sensor"),
    )


@dg.sensor(
    name="trace_threshold_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=[key for module in ROUTING_MODULES for key in lane_keys(module)],
    description="Starts a tenant's module lane when auto-optimization is on, its interval has passed "
    "and it has at least min_samples_for_optimization new labeled traces in Phoenix; a lane whose run "
    f"failed is retried on its next interval, up to {MAX_LANE_RETRIES} attempts.",
)
def trace_threshold_sensor(
    context: dg.SensorEvaluationContext, config_store: ConfigStoreResource, phoenix: PhoenixResource
):
    now = datetime.now(timezone.utc)
    partitions = set(context.instance.get_dynamic_partitions(tenants_partitions.name))
    configs = [config for config in config_store.store().list() if config.tenant_id in partitions]
    previous = json.loads(context.cursor) if context.cursor else {}
    resume_from = previous.get("resume_from")
    checks, unreachable = evaluate_tenants(
        context.instance, phoenix, configs, now, COUNT_BUDGET_S, resume_from, context.log
    )
    by_tenant = {config.tenant_id: config for config in configs}
    freshness, stale = lane_freshness(checks, by_tenant, now, previous)
    requests = [run_request(check, by_tenant[check.tenant_id]) for check in checks if check.requested]
    for check in checks:
        if check.attempt > 1:
            context.log.info(f"{check.name}: {check.verdict}")
    verdicts = [f"{check.name}: {check.verdict}" for check in checks if check.verdict != UNREACHABLE]
    deferred = rotation({check.tenant_id for check in checks if check.verdict == DEFERRED}, resume_from)
    if deferred:
        context.log.info(f"count budget spent: {len(deferred)} tenants' exact counts go on next tick")
    # The counted tenants were a prefix of this tick's rotation: the next tick starts with the rest.
    resume_from = deferred[0] if deferred else None
    cursor = json.dumps(
        {
            "evaluated_at": now.isoformat(),
            "tenants": len(configs),
            "requested": [r.run_key for r in requests],
            "resume_from": resume_from,
            **stale,
        }
    )
    if unreachable and not requests and len(unreachable) == len(configs):
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"{UNREACHABLE}: " + "; ".join(unreachable)),
            cursor=cursor,
            asset_events=freshness,
        )
    if not requests:
        reasons = verdicts + [f"{item} ({UNREACHABLE})" for item in unreachable]
        if len(reasons) > MAX_SKIP_REASONS:
            reasons = reasons[:MAX_SKIP_REASONS] + [f"... and {len(reasons) - MAX_SKIP_REASONS} more"]
        reason = "; ".join(reasons) or "no active tenants"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor, asset_events=freshness)
    return dg.SensorResult(run_requests=requests, cursor=cursor, asset_events=freshness)


def lane_freshness(
    checks: list[LaneCheck], configs: dict[str, RoutingConfig], now: datetime, previous: dict
) -> tuple[list[dg.AssetCheckEvaluation], dict]:
    """This tick's ``lane_freshness`` evaluations (only lanes whose state changed) and what the
    cursor carries to the next tick: when each due lane became due, and which lanes are stale.
    Both hold only due or stale lanes, so the cursor stays small however many tenants there are."""
    due_since = {lane: datetime.fromisoformat(moment) for lane, moment in previous.get("due_since", {}).items()}
    previously_stale = set(previous.get("stale", []))
    judged = judge_freshness(checks, configs, now, due_since)
    events = freshness_events(judged, previously_stale)
    for lane in judged:  # lanes judged this tick replace their old state; the others keep it
        due_since.pop(lane.lane, None)
        previously_stale.discard(lane.lane)
        if lane.due_since is not None:
            due_since[lane.lane] = lane.due_since
        if lane.stale:
            previously_stale.add(lane.lane)
    carried = {
        "due_since": {lane: moment.isoformat() for lane, moment in sorted(due_since.items())},
        "stale": sorted(previously_stale),
    }
    return events, carried


def error_chain(error) -> str:  # noqa: ANN001 - dagster's SerializableErrorInfo
    """The first line of an error and of each of its causes: "Exceeded max_retries of 3 <- ..."."""
    parts = []
    while error is not None:
        line = error.message.strip().splitlines()[0] if error.message.strip() else (error.cls_name or "error")
        if line not in parts:
            parts.append(line)
        error = error.cause
    return " <- ".join(parts)


def failure_observations(run: dg.DagsterRun, failed_steps: list[tuple[str, str]]) -> list[dg.AssetObservation]:
    """One observation per failed lane step of a tenant's run: ``(step_key, error message)`` pairs.
    ``attempt`` (the run's ATTEMPT_TAG, else 1) is what ``trace_threshold_sensor`` retries by."""
    tenant_id = run.tags.get("dagster/partition")
    if not tenant_id:
        return []
    attempt = run.tags.get(ATTEMPT_TAG, "1")
    attempt = int(attempt) if attempt.isdigit() and int(attempt) > 0 else 1
    lane_steps = {"__".join(key.path): key for module in ROUTING_MODULES for key in lane_keys(module)}
    observations = []
    for step_key, message in failed_steps:
        key = lane_steps.get(step_key)
        if key is None:
            continue
        observations.append(
            dg.AssetObservation(
                asset_key=key,
                partition=tenant_id,
                metadata={
                    "status": "failed",
                    "run_id": run.run_id,
                    "step": step_key,
                    ATTEMPT_TAG: attempt,
                    "error": message[:1000] or "(no message)",
                },
            )
        )
    return observations


@dg.run_failure_sensor(
    name="lane_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records each failed lane step as an observation on the tenant's partition of that "
    "asset, so the asset page shows which tenant × module failed, when and why.",
)
def lane_failure_sensor(context: dg.RunFailureSensorContext):
    failed = [
        (event.step_key, error_chain(event.event_specific_data.error)) for event in context.get_step_failure_events()
    ]
    observations = failure_observations(context.dagster_run, failed)
    for observation in observations:
        context.instance.report_runless_asset_event(observation)
    context.log.info(f"run {context.dagster_run.run_id}: recorded {len(observations)} failed lane steps")
