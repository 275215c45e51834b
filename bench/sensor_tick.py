"""Benchmark: one ``trace_threshold_sensor`` evaluation over many tenants with traces in Phoenix.

Starts its own Phoenix (SQLite in a temp dir), creates ``--tenants`` tenants with routing spans for
all three modules, marks a third of the lanes as optimized in a temp Dagster instance, and times:
  - a tick that requests runs (every due lane has enough new labeled traces),
  - a no-op tick (every lane optimized within its interval: no Phoenix request at all), right
    after every lane completed (each completion's time is read once) and the tick after it (the
    sensor remembers those times between ticks),
  - a no-op tick where intervals have passed but nothing new arrived (counts only, no runs), and
    the ticks after it that finish the exact counts its count budget deferred.
Prints wall time, the number of Phoenix GraphQL requests and of statements on Phoenix's database
(``--count-database``) of each; the sensor makes no LM call by construction (it has no LM resource).

    .venv/bin/python bench/sensor_tick.py [--tenants 1000] [--backend sqlite|postgres] [--count-concurrency 1]
        [--count-database] [--dagster sqlite|postgres]

``--count-database``: exact counts read from Phoenix's own database, Postgres or SQLite
(``COGNIVERSE_PHOENIX_READ_DATABASE_URL``). ``--dagster postgres``: Dagster's storage in
a new database on the bench's Postgres server (``deploy/dagster-postgres.yaml``, as deployed),
dropped afterwards; default a temporary SQLite instance.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dagster as dg
from private_phoenix import postgres_database, private_phoenix

from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.sensors import COMPLETION_STAGE, UNREACHABLE, trace_threshold_sensor
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.phoenix_database import PhoenixDatabase
from cogniverse_resources.tracer import RoutingDecision, RoutingTracer

POSTGRES_INSTANCE_FILE = Path(__file__).resolve().parents[1] / "deploy" / "dagster-postgres.yaml"
LABELS = {"modality": "video", "cross_modal": "none", "routing": "video_search_agent"}


class RequestCounter:
    """Counts the GraphQL requests the sensor makes to Phoenix and its statements on Phoenix's database."""

    def __init__(self):
        self.requests = 0
        self.statements = 0
        original = PhoenixResource._graphql
        original_statement = PhoenixDatabase._count_lanes

        def counted(resource, query, variables):
            self.requests += 1
            return original(resource, query, variables)

        def counted_statement(counter, connection, lanes):
            self.statements += 1
            return original_statement(counter, connection, lanes)

        PhoenixResource._graphql = counted
        PhoenixDatabase._count_lanes = counted_statement


def decisions(tenant: str, spans_per_module: int) -> list[RoutingDecision]:
    """A tenant's spans: each labeled by the router's own confident, successful answer."""
    return [
        RoutingDecision(
            module=module,
            query=f"query {n} of {tenant}",
            label=LABELS[module],
            confidence=0.9,
            processing_time_ms=12.0,
            module_version="v0",
            success=True,
        )
        for module in ROUTING_MODULES
        for n in range(spans_per_module)
    ]


def emit(phoenix: PhoenixResource, tenants: list[str], spans_per_module: int) -> list[str]:
    """Spans for every tenant; returns the last tenant's span ids (ingested last)."""
    for index, tenant in enumerate(tenants):
        tracer = RoutingTracer(phoenix, tenant)
        span_ids = [tracer.record(decision) for decision in decisions(tenant, spans_per_module)]
        tracer.flush()
        tracer.shutdown()
        if index % 100 == 99:
            print(f"  emitted spans for {index + 1} tenants", flush=True)
    return span_ids


PROFILE_DIR = os.environ.get("COGNIVERSE_BENCH_PROFILE_DIR")  # set: each tick's cProfile stats go there
ticks_profiled = 0


def tick(instance, resources, counter: RequestCounter, cursor: str | None = None) -> tuple[float, int, int, object]:
    """One sensor evaluation: (wall s, GraphQL requests, database statements, result)."""
    global ticks_profiled
    requests, statements = counter.requests, counter.statements
    profile = cProfile.Profile() if PROFILE_DIR else None
    started = time.perf_counter()
    if profile:
        profile.enable()
    result = trace_threshold_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
    seconds = time.perf_counter() - started
    if profile:
        profile.disable()
        ticks_profiled += 1
        profile.dump_stats(Path(PROFILE_DIR) / f"tick{ticks_profiled}.prof")
    return seconds, counter.requests - requests, counter.statements - statements, result


MAX_STALLED_TICKS = 3  # the sweep gives up after this many ticks that counted nobody


def resume_from(result) -> str | None:
    return json.loads(result.cursor).get("resume_from")


def unreachable_reason(result) -> str | None:
    """The skip reason of a tick whose Phoenix did not answer (its lanes were not counted)."""
    reason = result.skip_reason.skip_message if result.skip_reason else ""
    return reason if UNREACHABLE in reason else None


@contextmanager
def dagster_instance(root: Path, backend: str) -> Iterator[dg.DagsterInstance]:
    """The bench's Dagster instance: temporary SQLite, or the deployed Postgres configuration on a
    new database."""
    home = root / "dagster"
    home.mkdir()
    if backend == "sqlite":
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield instance
        return
    with postgres_database(root / "dagster_database") as url:
        shutil.copy(POSTGRES_INSTANCE_FILE, home / "dagster.yaml")
        os.environ["DAGSTER_POSTGRES_URL"] = url
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--spans-per-module", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="print the first tick's skip reason")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite", help="Phoenix's storage")
    parser.add_argument("--count-concurrency", type=int, default=1, help="exact-count requests in flight at once")
    parser.add_argument("--dagster", choices=["sqlite", "postgres"], default="sqlite", help="Dagster's storage")
    parser.add_argument(
        "--count-database",
        action="store_true",
        help="exact counts from Phoenix's own database (COGNIVERSE_PHOENIX_READ_DATABASE_URL)",
    )
    args = parser.parse_args()

    with private_phoenix(
        "bench-sensor-",
        backend=args.backend,
        read_database=args.count_database,
        count_concurrency=args.count_concurrency,
    ) as (root, phoenix):
        config_store = ConfigStoreResource(url=f"sqlite://{root}/config.sqlite")
        store = config_store.store()
        tenants = [f"t{index:05d}" for index in range(args.tenants)]
        for tenant in tenants:
            store.add(tenant, min_samples_for_optimization=args.spans_per_module, optimization_interval_seconds=3600)
        started = time.perf_counter()
        last_ids = emit(phoenix, tenants, args.spans_per_module)
        spans = len(tenants) * len(ROUTING_MODULES) * args.spans_per_module
        phoenix.wait_for_spans(tenants[-1], last_ids, timeout_s=600)
        print(f"setup: {spans} spans in {len(tenants)} projects in {time.perf_counter() - started:.0f}s", flush=True)

        counter = RequestCounter()
        resources = {"config_store": config_store, "phoenix": phoenix}
        with dagster_instance(root, args.dagster) as instance:
            started = time.perf_counter()
            instance.add_dynamic_partitions(tenants_partitions.name, tenants)
            # A third of the lanes were optimized a minute ago: not due (interval 1 h).
            for index, tenant in enumerate(tenants):
                module = list(ROUTING_MODULES)[index % 3]
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key=[module, COMPLETION_STAGE], partition=tenant)
                )
            print(f"marked {len(tenants)} lanes optimized in {time.perf_counter() - started:.0f}s", flush=True)
            rows = []
            seconds, requests, statements, result = tick(instance, resources, counter)
            rows.append(("tick with runs to request", seconds, requests, statements, len(result.run_requests or [])))
            if args.verbose:
                print(str(result.skip_reason)[:2000])
            for index, tenant in enumerate(tenants):  # every lane now optimized
                for module in ROUTING_MODULES:
                    instance.report_runless_asset_event(
                        dg.AssetMaterialization(asset_key=[module, COMPLETION_STAGE], partition=tenant)
                    )
            print(f"marked all {len(ROUTING_MODULES) * len(tenants)} lanes optimized", flush=True)
            seconds, requests, statements, result = tick(instance, resources, counter)
            rows.append(
                ("no-op tick (within intervals)", seconds, requests, statements, len(result.run_requests or []))
            )
            seconds, requests, statements, result = tick(instance, resources, counter, result.cursor)
            rows.append(("no-op tick, the next one", seconds, requests, statements, len(result.run_requests or [])))
            for tenant in tenants:
                store.update(tenant, optimization_interval_seconds=60)
            time.sleep(61)
            seconds, requests, statements, result = tick(instance, resources, counter)
            rows.append(
                (
                    "no-op tick (intervals passed, nothing new)",
                    seconds,
                    requests,
                    statements,
                    len(result.run_requests or []),
                )
            )
            # The exact counts the budget deferred go on in the following ticks (60 s apart in Dagster),
            # in tenant order: every lane has been counted once the rotation wraps around.
            sweep = [(seconds, requests, statements)]
            unreachable = [unreachable_reason(result)]
            position, stalled = resume_from(result), 0
            while position is not None and stalled < MAX_STALLED_TICKS:
                seconds, requests, statements, result = tick(instance, resources, counter, result.cursor)
                sweep.append((seconds, requests, statements))
                unreachable.append(unreachable_reason(result))
                position, previous = resume_from(result), position
                if position is not None and position < previous:
                    break  # wrapped around: every lane has been counted
                # The same position again: the tick's budget went before any exact count.
                stalled = stalled + 1 if position == previous else 0

    counting = "Phoenix's database" if args.count_database else "GraphQL"
    print(
        f"\n{args.tenants} tenants x {len(ROUTING_MODULES)} modules, {os.cpu_count()} cores, "
        f"Phoenix on {args.backend}, Dagster on {args.dagster}, count concurrency {args.count_concurrency}, "
        f"exact counts from {counting}"
    )
    print(
        f"{'tick':44s} {'wall s':>7s} {'Phoenix requests':>17s} {'DB statements':>14s} {'run requests':>13s} "
        f"{'LM calls':>9s}"
    )
    for name, seconds, requests, statements, runs in rows:
        print(f"{name:44s} {seconds:7.2f} {requests:17d} {statements:14d} {runs:13d} {0:9d}")
    covered = (
        "covered every lane" if stalled < MAX_STALLED_TICKS else f"STALLED ({MAX_STALLED_TICKS} ticks without progress)"
    )
    print(
        f"\nthe last no-op's exact counts {covered} in {len(sweep)} ticks: "
        f"slowest {max(s for s, _, _ in sweep):.2f} s, "
        f"total {sum(s for s, _, _ in sweep):.1f} s, {sum(r for _, r, _ in sweep)} Phoenix requests "
        f"and {sum(d for _, _, d in sweep)} database statements"
    )
    print("every tick of it, wall s: " + ", ".join(f"{s:.2f}" for s, _, _ in sweep))
    for reason in filter(None, unreachable):
        print(f"UNREACHABLE in a tick: {reason[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
