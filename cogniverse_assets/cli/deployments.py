"""``cogniverse deployments list|show|rollback``: which module version each tenant runs, and moving it back."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from cogniverse_assets.cli.common import CliError, add_module_option
from cogniverse_assets.modules.registry import ROUTING_MODULES, get_module
from cogniverse_resources.config_store import DeploymentRecord, open_config_store

ROLLBACK_HELP = """\
rollback moves the tenant x module deployment pointer back and records who did it and why.

Without --to, the target is the most recent version deployed before the current one that was not
itself rolled back from (or the unoptimized module when there is none): successive rollbacks walk
back through the history (v3 -> v2 -> v1 -> unoptimized) and never re-deploy a version that was
rolled back from. --to VERSION deploys any stored version (or 'unoptimized'), including one that
was rolled back from.

A rollback makes the last evaluation stale: materializing <module>/deployment again refuses to
deploy it; the next lane run evaluates against the rolled-back version.

When DAGSTER_HOME is set, the rollback is also reported to that Dagster instance as a
materialization of <module>/deployment on the tenant's partition (metadata: deployed_version,
previous_version, action=rollback, actor, reason), so the Dagster UI shows the deployed version.
Without DAGSTER_HOME only the config store records it.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deployments",
        help="deployed module versions: list, show, rollback",
        description="Deployed module versions: list, show (the pointer's history), rollback.",
        epilog=ROLLBACK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["list", "show", "rollback"])
    parser.add_argument("--tenant")
    add_module_option(parser)
    parser.add_argument(
        "--to",
        help="version to roll back to (default: the last version deployed before the current one that "
        "was not itself rolled back from, else 'unoptimized')",
    )
    parser.add_argument("--reason")
    parser.set_defaults(func=cmd_deployments)


def default_rollback_target(history: list[DeploymentRecord], unoptimized: str) -> str:
    """The version a rollback without ``--to`` goes to (``history`` oldest first): the most recent
    version deployed before the current one that is neither the current one nor a version some
    rollback moved away from; ``unoptimized`` when there is none."""
    if not history:
        return unoptimized
    current = history[-1].version
    rolled_back_from = {record.previous_version for record in history if record.action == "rollback"}
    for record in reversed(history[:-1]):
        if record.version != current and record.version not in rolled_back_from:
            return record.version
    return unoptimized


def report_to_dagster(record: DeploymentRecord) -> str:
    """Report a rollback to the Dagster instance at ``DAGSTER_HOME`` as a materialization of
    ``<module>/deployment`` on the tenant's partition; return what happened, for the operator."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return "DAGSTER_HOME is not set: the rollback is recorded in the config store only"
    import dagster as dg

    try:
        with dg.DagsterInstance.get() as instance:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=dg.AssetKey([record.module, "deployment"]),
                    partition=record.tenant_id,
                    description=f"rollback {record.previous_version} -> {record.version}",
                    metadata={
                        "deployed_version": record.version,
                        "previous_version": record.previous_version or "",
                        "action": record.action,
                        "actor": record.actor,
                        "reason": record.reason,
                        "at": record.at,
                    },
                )
            )
    except Exception as error:  # the pointer already moved; Dagster only shows it
        print(
            f"cogniverse: warning: the rollback is done but could not be reported to Dagster at {home}: "
            f"{type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return "not reported to Dagster"
    return f"reported to Dagster at {home}"


def cmd_deployments(args: argparse.Namespace) -> int:
    from cogniverse_assets.runtime import UNOPTIMIZED_VERSION
    from cogniverse_resources.artifacts import ArtifactStore, load_module_payload

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
    target = args.to or default_rollback_target(history, UNOPTIMIZED_VERSION)
    if target == current:
        if args.to:
            raise CliError(f"{args.tenant}/{args.module} already runs {current}")
        if not history:
            raise CliError(f"{args.tenant}/{args.module} runs {current}: nothing was deployed, nothing to roll back")
        raise CliError(
            f"{args.tenant}/{args.module} runs {current} and every earlier version was rolled back from: "
            "name one with --to"
        )
    if target != UNOPTIMIZED_VERSION:
        # The version must exist before the pointer moves.
        load_module_payload(ArtifactStore.from_env(), args.tenant, args.module, target)
    record = store.record_deployment(
        DeploymentRecord(
            tenant_id=args.tenant,
            module=args.module,
            version=target,
            action="rollback",
            actor=os.environ.get("USER", "cli"),
            reason=args.reason or "manual rollback",
            previous_version=current,
        )
    )
    print(f"rolled back {args.tenant}/{args.module}: {current} -> {record.version} ({report_to_dagster(record)})")
    return 0
