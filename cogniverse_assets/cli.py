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
    store.get(args.tenant)  # unknown tenants are an error, not a silently created project
    phoenix = PhoenixResource()
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

    p = sub.add_parser("run", help="stack + demo tenants + traffic + Dagster UI/daemon (what `make run` does)")
    p.add_argument("--no-lm", action="store_true")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, stack.StackError, InvalidTenantId, TenantNotFound, ValueError) as error:
        message = _validation_message(error) if isinstance(error, ValidationError) else str(error)
        print(f"cogniverse: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
