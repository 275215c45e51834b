"""``cogniverse deployments list|show|rollback``: which module version each tenant runs, and moving it back."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

from cogniverse_resources.config_store import DeploymentRecord, open_config_store
from cogniverse_assets.cli.common import CliError, add_module_option
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deployments", help="deployed module versions: list, show, rollback")
    parser.add_argument("action", choices=["list", "show", "rollback"])
    parser.add_argument("--tenant")
    add_module_option(parser)
    parser.add_argument("--to", help="version to roll back to (default: the previous one)")
    parser.add_argument("--reason")
    parser.set_defaults(func=cmd_deployments)


def cmd_deployments(args: argparse.Namespace) -> int:
    from cogniverse_resources.artifacts import ArtifactStore, load_module_payload
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
        # The version must exist before the pointer moves.
        load_module_payload(ArtifactStore.from_env(), args.tenant, args.module, target)
    record = store.record_deployment(DeploymentRecord(
        tenant_id=args.tenant, module=args.module, version=target, action="rollback",
        actor=os.environ.get("USER", "cli"), reason=args.reason or "manual rollback", previous_version=current,
    ))
    print(f"rolled back {args.tenant}/{args.module}: {current} -> {record.version}")
    return 0
