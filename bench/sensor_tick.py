"""Benchmark: one ``trace_threshold_sensor`` evaluation over many tenants with traces in Phoenix.

Starts its own Phoenix (SQLite in a temp dir), creates ``--tenants`` tenants with routing spans for
all three modules, marks a third of the lanes as optimized in a temp Dagster instance, and times:
  - a tick that requests runs (every due lane has enough new labeled traces),
  - a no-op tick (every lane optimized within its interval: no Phoenix request at all),
  - a no-op tick where intervals have passed but nothing new arrived (counts only, no runs), and
    the ticks after it that finish the exact counts its count budget deferred.
Prints wall time and the number of Phoenix requests of each; the sensor makes no LM call by
construction (it has no LM resource).

    .venv/bin/python bench/sensor_tick.py [--tenants 1000] [--backend sqlite|postgres] [--count-concurrency 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dagster as dg
from private_phoenix import private_phoenix

from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_assets.partitions import tenants_partitions
from cogniverse_assets.sensors import COMPLETION_STAGE, trace_threshold_sensor
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.tracer import RoutingDecision, RoutingTracer

LABELS = {"modality": "video", "cross_modal": "none", "routing": "video_search_agent"}


class RequestCounter:
    """Counts the GraphQL requests the sensor makes to Phoenix."""

    def __init__(self):
        self.requests = 0
        original = PhoenixResource._graphql

        def counted(resource, query, variables):
            self.requests += 1
            return original(resource, query, variables)

        PhoenixResource._graphql = counted


def emit(phoenix: PhoenixResource, tenants: list[str], spans_per_module: int) -> list[str]:
    """Spans for every tenant; returns the last tenant's span ids (ingested last)."""
    for index, tenant in enumerate(tenants):
        tracer = RoutingTracer(phoenix, tenant)
        span_ids = []
        for module in ROUTING_MODULES:
            for n in range(spans_per_module):
                span_ids.append(
                    tracer.record(
                        RoutingDecision(
                            module=module,
                            query=f"query {n} of {tenant}",
                            label=LABELS[module],
                            confidence=0.9,
                            processing_time_ms=12.0,
                            module_version="v0",
                            success=True,
                        )
                    )
                )
        tracer.flush()
        tracer.shutdown()
        if index % 100 == 99:
            print(f"  emitted spans for {index + 1} tenants", flush=True)
    return span_ids


def tick(instance, resources, counter: RequestCounter, cursor: str | None = None) -> tuple[float, int, object]:
    before = counter.requests
    started = time.perf_counter()
    result = trace_threshold_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
    return time.perf_counter() - started, counter.requests - before, result


MAX_STALLED_TICKS = 3  # the sweep gives up after this many ticks that counted nobody


def resume_from(result) -> str | None:
    return json.loads(result.cursor).get("resume_from")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--spans-per-module", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="print the first tick's skip reason")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite", help="Phoenix's storage")
    parser.add_argument("--count-concurrency", type=int, default=1, help="exact-count requests in flight at once")
    args = parser.parse_args()

    with private_phoenix("bench-sensor-", backend=args.backend) as (root, phoenix):
        phoenix = phoenix.model_copy(update={"count_concurrency": args.count_concurrency})
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
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            instance.add_dynamic_partitions(tenants_partitions.name, tenants)
            # A third of the lanes were optimized a minute ago: not due (interval 1 h).
            for index, tenant in enumerate(tenants):
                module = list(ROUTING_MODULES)[index % 3]
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(asset_key=[module, COMPLETION_STAGE], partition=tenant)
                )
            rows = []
            seconds, requests, result = tick(instance, resources, counter)
            rows.append(("tick with runs to request", seconds, requests, len(result.run_requests or [])))
            if args.verbose:
                print(str(result.skip_reason)[:2000])
            for index, tenant in enumerate(tenants):  # every lane now optimized
                for module in ROUTING_MODULES:
                    instance.report_runless_asset_event(
                        dg.AssetMaterialization(asset_key=[module, COMPLETION_STAGE], partition=tenant)
                    )
            seconds, requests, result = tick(instance, resources, counter)
            rows.append(("no-op tick (within intervals)", seconds, requests, len(result.run_requests or [])))
            for tenant in tenants:
                store.update(tenant, optimization_interval_seconds=60)
            time.sleep(61)
            seconds, requests, result = tick(instance, resources, counter)
            rows.append(
                ("no-op tick (intervals passed, nothing new)", seconds, requests, len(result.run_requests or []))
            )
            # The exact counts the budget deferred go on in the following ticks (60 s apart in Dagster),
            # in tenant order: every lane has been counted once the rotation wraps around.
            sweep = [(seconds, requests)]
            position, stalled = resume_from(result), 0
            while position is not None and stalled < MAX_STALLED_TICKS:
                seconds, requests, result = tick(instance, resources, counter, result.cursor)
                sweep.append((seconds, requests))
                position, previous = resume_from(result), position
                if position is not None and position < previous:
                    break  # wrapped around: every lane has been counted
                # The same position again: the tick's budget went before any exact count.
                stalled = stalled + 1 if position == previous else 0

    print(
        f"\n{args.tenants} tenants x {len(ROUTING_MODULES)} modules, {os.cpu_count()} cores, "
        f"Phoenix on {args.backend}, count concurrency {args.count_concurrency}"
    )
    print(f"{'tick':44s} {'wall s':>7s} {'Phoenix requests':>17s} {'run requests':>13s} {'LM calls':>9s}")
    for name, seconds, requests, runs in rows:
        print(f"{name:44s} {seconds:7.2f} {requests:17d} {runs:13d} {0:9d}")
    covered = (
        "covered every lane" if stalled < MAX_STALLED_TICKS else f"STALLED ({MAX_STALLED_TICKS} ticks without progress)"
    )
    print(
        f"\nthe last no-op's exact counts {covered} in {len(sweep)} ticks: "
        f"slowest {max(s for s, _ in sweep):.2f} s, "
        f"total {sum(s for s, _ in sweep):.1f} s and {sum(r for _, r in sweep)} Phoenix requests"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
