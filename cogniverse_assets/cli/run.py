"""``cogniverse run`` (the local all-in-one: stack, demo tenants, traffic, Dagster) and ``cogniverse demo``
(the headless closed loop through the Dagster daemon)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

from cogniverse_assets.cli.common import add_module_option
from cogniverse_assets.cli.stack import stack_down, stack_up
from cogniverse_assets.modules.registry import ROUTING_MODULES
from cogniverse_resources import stack
from cogniverse_resources.config_store import open_config_store
from cogniverse_resources.paths import REPO_ROOT

DEMO_TENANTS = ("acme", "globex")
DEMO_TRAFFIC_REQUESTS = 300
DEMO_FEEDBACK_RATE = 0.5
DAGSTER_PORT = int(os.environ.get("DAGSTER_PORT", "3000"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="headless closed loop through the Dagster daemon; prints a table (what `make demo` does)"
    )
    parser.add_argument("--requests", type=int, default=60, help="requests per tenant (3 spans each)")
    parser.add_argument("--feedback-rate", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=3600)
    add_module_option(parser, action="append", help="only these modules get traffic (and so runs); default all")
    parser.set_defaults(func=cmd_demo)

    parser = subparsers.add_parser(
        "run", help="stack + demo tenants + traffic + Dagster UI/daemon (what `make run` does)"
    )
    parser.add_argument("--no-lm", action="store_true")
    parser.set_defaults(func=cmd_run)


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / "dagster_home")).resolve()


def _interrupt(signum, frame):  # noqa: ANN001 - signal handler signature
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    """Stack + demo tenants + demo traffic + Dagster (webserver and daemon); Ctrl-C stops it all."""
    from cogniverse_assets.traffic import emit_traffic
    from cogniverse_resources.phoenix import PhoenixResource

    # Ctrl-C (or a SIGTERM from a supervisor) unwinds through `finally` and stops what we started,
    # even when the shell that launched us had SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    stack_up(with_lm=not args.no_lm)
    store = open_config_store()
    phoenix = PhoenixResource.from_env()
    dagster = None
    try:
        for tenant_id in DEMO_TENANTS:
            if store.exists(tenant_id):
                print(f"tenant {tenant_id} exists")
                continue
            store.add(tenant_id)
            report = emit_traffic(
                phoenix,
                tenant_id,
                n=DEMO_TRAFFIC_REQUESTS,
                feedback_rate=DEMO_FEEDBACK_RATE,
                seed=zlib.crc32(tenant_id.encode()),
            )
            print(f"tenant {tenant_id} added with {report.spans} spans, {report.annotated} annotated")
        env = {**os.environ, "DAGSTER_HOME": str(dagster_home())}
        dagster_home().mkdir(parents=True, exist_ok=True)
        dagster = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster")),
                "dev",
                "-w",
                str(REPO_ROOT / "workspace.yaml"),
                "-h",
                stack.HOST,
                "-p",
                str(DAGSTER_PORT),
            ],
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Headless closed loop: stack, tenants, traffic with feedback, the daemon's sensor runs, a table."""
    import time

    from cogniverse_assets.demo import (
        cancel_queued_runs,
        format_table,
        outcomes,
        prepare_instance,
        start_daemon,
        stop_daemon,
        wait_for_runs,
    )
    from cogniverse_assets.deployment import STEP_EXECUTION_ENV
    from cogniverse_assets.traffic import emit_traffic
    from cogniverse_resources.artifacts import ArtifactStore
    from cogniverse_resources.paths import data_dir
    from cogniverse_resources.phoenix import PhoenixResource

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    stack_up(with_lm=True)
    store, artifacts, phoenix = open_config_store(), ArtifactStore.from_env(), PhoenixResource.from_env()
    settings = {"acme": {"use_synthetic_data": True}, "globex": {"use_synthetic_data": False}}
    for tenant_id, extra in settings.items():
        values = {
            "min_samples_for_optimization": args.min_samples,
            "optimization_interval_seconds": 60,
            "max_training_iterations": 20,
            **extra,
        }
        store.update(tenant_id, **values) if store.exists(tenant_id) else store.add(tenant_id, **values)
        report = emit_traffic(
            phoenix,
            tenant_id,
            n=args.requests,
            feedback_rate=args.feedback_rate,
            seed=zlib.crc32(tenant_id.encode()),
            modules=args.module,
            progress=False,
        )
        print(f"{tenant_id}: {report.spans} spans, {report.annotated} annotated", flush=True)
    home = data_dir() / "demo_dagster_home"
    # One lane at a time, each in one process: the local LM server answers one call at a time, and
    # on 2 cores two runs taking turns on it, or a fresh process per step, cost more than they
    # overlap (docs/benchmarks.md, "make demo"). A user's own COGNIVERSE_STEP_EXECUTION wins.
    instance = prepare_instance(home, list(settings), max_concurrent_runs=1)
    os.environ.setdefault(STEP_EXECUTION_ENV, "in_process")
    already = len([run for run in instance.get_runs() if run.tags.get("trigger") == "trace_threshold_sensor"])
    daemon = start_daemon(home, data_dir() / "run" / "demo-daemon.log")
    try:
        print("waiting for trace_threshold_sensor's runs (the daemon evaluates it every 60 s) ...", flush=True)
        lanes = len(settings) * len(args.module or ROUTING_MODULES)
        wait_for_runs(
            instance,
            list(settings),
            expected=already + lanes,
            timeout_s=args.timeout,
            progress=lambda s: print(f"  {s}", flush=True),
        )
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        stop_daemon(daemon)
        stack_down()
        if canceled := cancel_queued_runs(instance, list(settings)):
            print(f"canceled {canceled} queued runs the sensor requested after the lanes above", flush=True)
    print()
    print(format_table(outcomes(store, artifacts, list(settings), args.module)))
    print(f"\ntotal wall time {time.monotonic() - started:.0f}s")
    return 0
