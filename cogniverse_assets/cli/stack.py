"""``cogniverse stack up|down|status``: the embedded Phoenix and local LM server."""

from __future__ import annotations

import argparse
import os

from cogniverse_resources import settings, stack
from cogniverse_resources.phoenix import PhoenixResource


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stack", help="embedded Phoenix + local LM")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--no-lm", action="store_true", help="start Phoenix only")
    parser.set_defaults(func=cmd_stack)


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
    read_own_database(phoenix)
    if with_lm:
        print("checking the local LM model (downloads ~470 MB once) ...", flush=True)
        model = stack.ensure_local_model()
        state = stack.lm_service(model_path=model).start()
        print(f"lm       healthy  {stack.local_lm_api_base()}  (pid {state.pid}, log {state.log_file})", flush=True)


def read_own_database(phoenix: stack.ManagedService) -> None:
    """Point the pipeline at the database of the Phoenix the stack started, for the sensor's counts
    and ingestion's feedback (``COGNIVERSE_PHOENIX_READ_DATABASE_URL``, read by the processes this
    one starts): GraphQL would cost the sensor a tick per ~90 tenants (docs/benchmarks.md). Only
    when the pipeline's Phoenix is that one; a user's own setting wins."""
    [variable] = settings.RESOURCE_ENV["PhoenixResource"]["read_database_url"].variables
    if PhoenixResource.from_env().endpoint.rstrip("/") == stack.phoenix_url():
        os.environ.setdefault(variable, phoenix.spec.env["PHOENIX_SQL_DATABASE_URL"])


def stack_down() -> None:
    # Stop everything before reporting: on Ctrl-C the terminal (or a pipe) may already be gone.
    results = [(service.spec.name, service.stop()) for service in _known_services()]
    for name, stopped in results:
        print(f"{name:8s} {'stopped' if stopped else 'was not running'}", flush=True)
