"""``cogniverse traffic`` (simulated routed requests with feedback) and ``cogniverse route`` (one query)."""

from __future__ import annotations

import argparse
import json
import sys

from cogniverse_assets.cli.common import CliError, add_module_option
from cogniverse_resources.config_store import open_config_store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "traffic", help="emit routed requests (spans + feedback) into a tenant's Phoenix project"
    )
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--n", type=int, default=100, help="number of requests (3 spans each)")
    parser.add_argument(
        "--feedback-rate", type=float, default=0.3, help="fraction of spans annotated with the true label"
    )
    parser.add_argument("--policy", choices=["noisy", "deployed"], default="noisy")
    parser.add_argument("--accuracy", type=float, default=0.75, help="accuracy of the noisy simulated router")
    add_module_option(parser, action="append", help="only these modules")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=cmd_traffic)

    parser = subparsers.add_parser("route", help="answer one query with the tenant's deployed module (and trace it)")
    parser.add_argument("--tenant", required=True)
    add_module_option(parser, required=True)
    parser.add_argument("query")
    parser.add_argument("--modality", action="append", help="detected modality (cross_modal input, repeatable)")
    parser.add_argument("--entity", action="append", help="entity (routing input, repeatable)")
    parser.add_argument("--no-trace", action="store_true", help="do not emit a span")
    parser.set_defaults(func=cmd_route)


def cmd_traffic(args: argparse.Namespace) -> int:
    from cogniverse_assets.traffic import emit_traffic
    from cogniverse_resources.phoenix import PhoenixResource

    store = open_config_store()
    config = store.get(args.tenant)  # unknown tenants are an error, not a silently created project
    phoenix = PhoenixResource.from_env().for_tenant(config.phoenix_endpoint, config.phoenix_api_key_env)
    if not phoenix.healthy():
        raise CliError(f"Phoenix is not reachable at {phoenix.endpoint} (start it with `cogniverse stack up`)")
    report = emit_traffic(
        phoenix,
        args.tenant,
        n=args.n,
        feedback_rate=args.feedback_rate,
        policy=args.policy,
        accuracy=args.accuracy,
        seed=args.seed,
        modules=args.module,
        progress=not args.quiet,
    )
    print(
        f"{report.tenant_id}: {report.requests} requests, {report.spans} spans, {report.annotated} "
        f"annotated, {report.errors} errors in {report.seconds:.1f}s -> project {phoenix.project_name(args.tenant)}"
    )
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from cogniverse_assets.runtime import load_router, timed_route
    from cogniverse_resources.phoenix import PhoenixResource
    from cogniverse_resources.tracer import RoutingDecision, RoutingTracer

    config = open_config_store().get(args.tenant)
    router = load_router(args.tenant, args.module)
    if router.is_fallback:
        print(
            f"note: no deployed {args.module} module for {args.tenant}; using the unoptimized module", file=sys.stderr
        )
    row = {"query": args.query, "detected_modalities": args.modality or [], "entities": args.entity or []}
    answer, elapsed_ms = timed_route(router, row)
    label = answer.label
    span_id = None
    if not args.no_trace:
        tracer = RoutingTracer(
            PhoenixResource.from_env().for_tenant(config.phoenix_endpoint, config.phoenix_api_key_env), args.tenant
        )
        span_id = tracer.record(
            RoutingDecision(
                module=args.module,
                query=args.query,
                label=label,
                confidence=answer.confidence,
                path=answer.path,
                program_key=answer.program_key,
                processing_time_ms=elapsed_ms,
                module_version=router.version,
                detected_modalities=row["detected_modalities"],
                entities=row["entities"],
            )
        )
        tracer.shutdown()
    print(
        json.dumps(
            {
                "tenant": args.tenant,
                "module": args.module,
                "label": label,
                "path": answer.path,
                "confidence": None if answer.confidence is None else round(answer.confidence, 4),
                "module_version": router.version,
                "latency_ms": round(elapsed_ms, 1),
                "span_id": span_id,
            }
        )
    )
    return 0
