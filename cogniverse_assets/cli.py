"""``cogniverse``: the operator's command line (stack, tenants, traffic, the local all-in-one run)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

from pydantic import ValidationError

from cogniverse_resources import stack
from cogniverse_resources.config_store import TenantNotFound, dump_config, open_config_store
from cogniverse_resources.paths import REPO_ROOT
from cogniverse_resources.tenant import InvalidTenantId, routing_config_field_names

DEMO_TENANTS = ("acme", "globex")
DEMO_TRAFFIC_REQUESTS = 300
DEMO_FEEDBACK_RATE = 0.5
DAGSTER_PORT = int(os.environ.get("DAGSTER_PORT", "3000"))


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "value"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _parse_settings(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    allowed = routing_config_field_names()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"expected KEY=VALUE, got {pair!r}")
        if key not in allowed:
            raise CliError(f"unknown setting {key!r}; settable: {', '.join(allowed)}")
        settings[key] = value
    return settings


# --------------------------------------------------------------------------------------- stack


def cmd_stack(args: argparse.Namespace) -> int:
    if args.action == "up":
        stack_up(with_lm=not args.no_lm)
    elif args.action == "down":
        stack_down()
    else:
        for service in _known_services():
            state = service.status()
            label = "healthy" if state.healthy else ("running, not healthy" if state.running else "stopped")
            print(f"{state.name:8s} {label:22s} {state.url if state.running else ''}  log: {state.log_file}")
    return 0


def _known_services() -> list[stack.ManagedService]:
    services = [stack.lm_service()]
    try:
        services.insert(0, stack.phoenix_service())
    except stack.StackError:
        pass
    return services


def stack_up(with_lm: bool = True) -> None:
    phoenix = stack.phoenix_service()
    print(f"starting Phoenix on {stack.phoenix_url()} (first start takes 30-60 s) ...", flush=True)
    state = phoenix.start()
    print(f"phoenix  healthy  {stack.phoenix_url()}  (pid {state.pid}, log {state.log_file})", flush=True)
    if with_lm:
        print("checking the local LM model (downloads ~470 MB once) ...", flush=True)
        model = stack.ensure_local_model()
        state = stack.lm_service(model_path=model).start()
        print(f"lm       healthy  {stack.local_lm_api_base()}  (pid {state.pid}, log {state.log_file})", flush=True)


def stack_down() -> None:
    # Stop everything before reporting: on Ctrl-C the terminal (or a pipe) may already be gone.
    results = [(service.spec.name, service.stop()) for service in _known_services()]
    for name, stopped in results:
        print(f"{name:8s} {'stopped' if stopped else 'was not running'}", flush=True)


# ------------------------------------------------------------------------------------- tenants


def cmd_tenants(args: argparse.Namespace) -> int:
    store = open_config_store()
    if args.action == "list":
        configs = store.list()
        if not configs:
            print("no tenants (add one with `cogniverse tenants add NAME`)")
        for config in configs:
            state = "enabled" if config.enable_auto_optimization else "disabled"
            print(f"{config.tenant_id:24s} {state:9s} interval={config.optimization_interval_seconds}s "
                  f"min_samples={config.min_samples_for_optimization} optimizer={config.preferred_optimizer}")
        return 0
    if args.action == "add":
        config = store.add(args.tenant, **_parse_settings(args.set or []))
        print(f"added tenant {config.tenant_id}")
    elif args.action == "show":
        config = store.get(args.tenant)
    elif args.action == "set":
        config = store.update(args.tenant, **_parse_settings(args.settings))
    elif args.action in ("disable", "enable"):
        config = store.update(args.tenant, enable_auto_optimization=args.action == "enable")
    else:  # pragma: no cover - argparse restricts actions
        raise CliError(f"unknown action {args.action}")
    print(dump_config(config))
    return 0


# ------------------------------------------------------------------------------------- traffic


def cmd_traffic(args: argparse.Namespace) -> int:
    from cogniverse_resources.phoenix import PhoenixResource
    from cogniverse_assets.traffic import emit_traffic

    store = open_config_store()
    config = store.get(args.tenant)  # unknown tenants are an error, not a silently created project
    phoenix = PhoenixResource().for_tenant(config.phoenix_endpoint)
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


# ------------------------------------------------------------------------------- route and eval


def cmd_route(args: argparse.Namespace) -> int:
    from cogniverse_resources.phoenix import PhoenixResource
    from cogniverse_resources.tracer import RoutingDecision, RoutingTracer
    from cogniverse_assets.runtime import load_router, timed_route

    config = open_config_store().get(args.tenant)
    router = load_router(args.tenant, args.module)
    if router.is_fallback:
        print(f"note: no deployed {args.module} module for {args.tenant}; using the unoptimized module", file=sys.stderr)
    row = {"query": args.query, "detected_modalities": args.modality or [], "entities": args.entity or []}
    prediction, elapsed_ms = timed_route(router, row)
    label = router.spec.label_of(prediction)
    span_id = None
    if not args.no_trace:
        tracer = RoutingTracer(PhoenixResource().for_tenant(config.phoenix_endpoint), args.tenant)
        span_id = tracer.record(RoutingDecision(
            module=args.module, query=args.query, label=label, confidence=0.8, processing_time_ms=elapsed_ms,
            module_version=router.version, detected_modalities=row["detected_modalities"], entities=row["entities"],
        ))
        tracer.shutdown()
    print(json.dumps({"tenant": args.tenant, "module": args.module, "label": label, "module_version": router.version,
                      "latency_ms": round(elapsed_ms, 1), "span_id": span_id}))
    return 0


def read_labeled_jsonl(path: Path, spec) -> tuple[list[dict], list[str]]:  # noqa: ANN001 - RoutingModuleSpec
    """Rows with ``query`` and ``label`` (or ``accept``) from a JSONL file; bad lines as messages."""
    rows, errors = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            errors.append(f"line {number}: not JSON ({error.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip():
            errors.append(f"line {number}: missing 'query'")
            continue
        accept = row.get("accept") or ([row["label"]] if "label" in row else None)
        if not accept or not isinstance(accept, list) or any(label not in spec.labels for label in accept):
            errors.append(f"line {number}: 'label'/'accept' must name {spec.name} labels ({', '.join(spec.labels)})")
            continue
        rows.append({**row, "accept": accept})
    return rows, errors


def cmd_eval(args: argparse.Namespace) -> int:
    from cogniverse_assets.modules.registry import get_module
    from cogniverse_assets.runtime import UNOPTIMIZED_VERSION, Router, load_router

    spec = get_module(args.module)
    path = Path(args.data)
    if not path.exists():
        raise CliError(f"no such file: {path}")
    rows, errors = read_labeled_jsonl(path, spec)
    for error in errors:
        print(f"skipped {error}", file=sys.stderr)
    if not rows:
        raise CliError(f"no usable rows in {path}")
    if args.baseline:
        from cogniverse_resources.lm import LanguageModelResource

        lm = LanguageModelResource()
        router = Router(args.tenant or "-", spec, spec.program(), UNOPTIMIZED_VERSION, lm.student(), lm.adapter())
    else:
        if not args.tenant:
            raise CliError("--tenant is required unless --baseline")
        open_config_store().get(args.tenant)
        router = load_router(args.tenant, args.module)
        if router.is_fallback:
            print(f"note: no deployed {args.module} module for {args.tenant}; evaluating the unoptimized module", file=sys.stderr)
    per_class: dict[str, dict[str, int]] = {}
    correct = 0
    for index, row in enumerate(rows, start=1):
        label = router.spec.label_of(router.route(row))
        hit = label in row["accept"]
        correct += hit
        stats = per_class.setdefault(row["accept"][0], {"n": 0, "correct": 0})
        stats["n"] += 1
        stats["correct"] += hit
        if not args.json and index % 10 == 0:
            print(f"  {index}/{len(rows)} ...", file=sys.stderr, flush=True)
    result = {
        "accuracy": round(correct / len(rows), 4),
        "n": len(rows),
        "errors": len(errors),
        "per_class": {label: {**stats, "accuracy": round(stats["correct"] / stats["n"], 4)} for label, stats in sorted(per_class.items())},
        "module_version": router.version,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.module} {router.version}: accuracy {result['accuracy']:.3f} on {len(rows)} examples ({len(errors)} bad lines)")
        for label, stats in result["per_class"].items():
            print(f"  {label:24s} {stats['correct']:4d}/{stats['n']:<4d} {stats['accuracy']:.3f}")
    return 0


# --------------------------------------------------------------------------------- deployments


def cmd_deployments(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cogniverse_resources.artifacts import ArtifactStore, load_module_payload
    from cogniverse_resources.config_store import DeploymentRecord
    from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
    from cogniverse_assets.runtime import UNOPTIMIZED_VERSION

    store = open_config_store()
    if args.action == "list":
        tenants = [args.tenant] if args.tenant else store.tenant_ids()
        for tenant_id in tenants:
            for module in ROUTING_MODULES:
                record = store.deployed(tenant_id, module)
                version = record.version if record else f"{UNOPTIMIZED_VERSION} (nothing promoted)"
                print(f"{tenant_id:24s} {module:12s} {version}")
        return 0
    if not args.tenant or not args.module:
        raise CliError("--tenant and --module are required")
    store.get(args.tenant)
    get_module(args.module)
    history = store.deployment_history(args.tenant, args.module)
    if args.action == "show":
        print(json.dumps([asdict(record) for record in history], indent=2))
        return 0
    current = history[-1].version if history else UNOPTIMIZED_VERSION
    if args.to:
        target = args.to
    else:
        earlier = [record.version for record in history[:-1] if record.version != current]
        target = earlier[-1] if earlier else UNOPTIMIZED_VERSION
    if target == current:
        raise CliError(f"{args.tenant}/{args.module} already runs {current}")
    if target != UNOPTIMIZED_VERSION:
        load_module_payload(ArtifactStore(), args.tenant, args.module, target)  # must exist before the pointer moves
    record = store.record_deployment(DeploymentRecord(
        tenant_id=args.tenant, module=args.module, version=target, action="rollback",
        actor=os.environ.get("USER", "cli"), reason=args.reason or "manual rollback", previous_version=current,
    ))
    print(f"rolled back {args.tenant}/{args.module}: {current} -> {record.version}")
    return 0


# ----------------------------------------------------------------------------------------- run


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / "dagster_home")).resolve()


def _interrupt(signum, frame):  # noqa: ANN001 - signal handler signature
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    """Stack + demo tenants + demo traffic + Dagster (webserver and daemon); Ctrl-C stops it all."""
    from cogniverse_resources.phoenix import PhoenixResource
    from cogniverse_assets.traffic import emit_traffic

    # Ctrl-C (or a SIGTERM from a supervisor) unwinds through `finally` and stops what we started,
    # even when the shell that launched us had SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    stack_up(with_lm=not args.no_lm)
    store = open_config_store()
    phoenix = PhoenixResource()
    dagster = None
    try:
        for tenant_id in DEMO_TENANTS:
            if store.exists(tenant_id):
                print(f"tenant {tenant_id} exists")
                continue
            store.add(tenant_id)
            report = emit_traffic(phoenix, tenant_id, n=DEMO_TRAFFIC_REQUESTS, feedback_rate=DEMO_FEEDBACK_RATE, seed=zlib.crc32(tenant_id.encode()))
            print(f"tenant {tenant_id} added with {report.spans} spans, {report.annotated} annotated")
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home())}
        dagster_home().mkdir(parents=True, exist_ok=True)
        dagster = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
             "-h", stack.HOST, "-p", str(DAGSTER_PORT)],
            cwd=REPO_ROOT, env=env, start_new_session=True,
        )
        print(
            f"\n  Dagster UI: http://{stack.HOST}:{DAGSTER_PORT}\n  Phoenix UI: {stack.phoenix_url()}\n"
            "  (Ctrl-C stops Dagster, Phoenix and the LM)\n",
            flush=True,
        )
        dagster.wait()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        if dagster is not None and dagster.poll() is None:
            os.killpg(dagster.pid, signal.SIGINT)
            try:
                dagster.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(dagster.pid, signal.SIGKILL)
        stack_down()
    return 0


# ---------------------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    """Headless closed loop: stack, tenants, traffic with feedback, the daemon's sensor runs, a table."""
    import time

    from cogniverse_resources.artifacts import ArtifactStore
    from cogniverse_resources.paths import data_dir
    from cogniverse_resources.phoenix import PhoenixResource
    from cogniverse_assets.demo import format_table, outcomes, prepare_instance, start_daemon, stop_daemon, wait_for_runs
    from cogniverse_assets.modules.registry import ROUTING_MODULES
    from cogniverse_assets.traffic import emit_traffic

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    stack_up(with_lm=True)
    store, artifacts, phoenix = open_config_store(), ArtifactStore(), PhoenixResource()
    settings = {"acme": {"use_synthetic_data": True}, "globex": {"use_synthetic_data": False}}
    for tenant_id, extra in settings.items():
        values = {"min_samples_for_optimization": args.min_samples, "optimization_interval_seconds": 60, "max_training_iterations": 20, **extra}
        store.update(tenant_id, **values) if store.exists(tenant_id) else store.add(tenant_id, **values)
        report = emit_traffic(phoenix, tenant_id, n=args.requests, feedback_rate=args.feedback_rate,
                              seed=zlib.crc32(tenant_id.encode()), modules=args.module, progress=False)
        print(f"{tenant_id}: {report.spans} spans, {report.annotated} annotated", flush=True)
    home = data_dir() / "demo_dagster_home"
    instance = prepare_instance(home, list(settings))
    already = len([run for run in instance.get_runs() if run.tags.get("trigger") == "trace_threshold_sensor"])
    daemon = start_daemon(home, data_dir() / "run" / "demo-daemon.log")
    try:
        print("waiting for trace_threshold_sensor's runs (the daemon evaluates it every 60 s) ...", flush=True)
        lanes = len(settings) * len(args.module or ROUTING_MODULES)
        wait_for_runs(instance, list(settings), expected=already + lanes, timeout_s=args.timeout, progress=lambda s: print(f"  {s}", flush=True))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        stop_daemon(daemon)
        stack_down()
    print()
    print(format_table(outcomes(store, artifacts, list(settings), args.module)))
    print(f"\ntotal wall time {time.monotonic() - started:.0f}s")
    return 0


# ---------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogniverse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="embedded Phoenix + local LM")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--no-lm", action="store_true", help="start Phoenix only")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("tenants", help="manage tenants and their optimization settings")
    tsub = p.add_subparsers(dest="action", required=True)
    tsub.add_parser("list")
    for action in ("add", "show", "set", "disable", "enable"):
        tp = tsub.add_parser(action)
        tp.add_argument("tenant")
        if action == "add":
            tp.add_argument("--set", action="append", metavar="KEY=VALUE", help="initial setting (repeatable)")
        if action == "set":
            tp.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_tenants)

    p = sub.add_parser("traffic", help="emit routed requests (spans + feedback) into a tenant's Phoenix project")
    p.add_argument("--tenant", required=True)
    p.add_argument("--n", type=int, default=100, help="number of requests (3 spans each)")
    p.add_argument("--feedback-rate", type=float, default=0.3, help="fraction of spans annotated with the true label")
    p.add_argument("--policy", choices=["noisy", "deployed"], default="noisy")
    p.add_argument("--accuracy", type=float, default=0.75, help="accuracy of the noisy simulated router")
    p.add_argument("--module", action="append", choices=["modality", "cross_modal", "routing"], help="only these modules")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_traffic)

    p = sub.add_parser("route", help="answer one query with the tenant's deployed module (and trace it)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--module", required=True, choices=["modality", "cross_modal", "routing"])
    p.add_argument("query")
    p.add_argument("--modality", action="append", help="detected modality (cross_modal input, repeatable)")
    p.add_argument("--entity", action="append", help="entity (routing input, repeatable)")
    p.add_argument("--no-trace", action="store_true", help="do not emit a span")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("eval", help="accuracy of the deployed (or unoptimized) module on your labeled JSONL")
    p.add_argument("--tenant")
    p.add_argument("--module", required=True, choices=["modality", "cross_modal", "routing"])
    p.add_argument("--data", required=True, help='JSONL: {"query", "label"} or {"query", "accept": [labels]} + module inputs')
    p.add_argument("--baseline", action="store_true", help="evaluate the unoptimized module")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("deployments", help="deployed module versions: list, show, rollback")
    p.add_argument("action", choices=["list", "show", "rollback"])
    p.add_argument("--tenant")
    p.add_argument("--module", choices=["modality", "cross_modal", "routing"])
    p.add_argument("--to", help="version to roll back to (default: the previous one)")
    p.add_argument("--reason")
    p.set_defaults(func=cmd_deployments)

    p = sub.add_parser("demo", help="headless closed loop through the Dagster daemon; prints a table (what `make demo` does)")
    p.add_argument("--requests", type=int, default=60, help="requests per tenant (3 spans each)")
    p.add_argument("--feedback-rate", type=float, default=0.6)
    p.add_argument("--min-samples", type=int, default=30)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--module", action="append", choices=["modality", "cross_modal", "routing"],
                   help="only these modules get traffic (and so runs); default all three")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="stack + demo tenants + traffic + Dagster UI/daemon (what `make run` does)")
    p.add_argument("--no-lm", action="store_true")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, stack.StackError, InvalidTenantId, TenantNotFound, ValueError, FileNotFoundError) as error:
        message = _validation_message(error) if isinstance(error, ValidationError) else str(error)
        print(f"cogniverse: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
