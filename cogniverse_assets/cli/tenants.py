"""``cogniverse tenants``: add, list, show and change tenants and their optimization settings."""

from __future__ import annotations

import argparse

from cogniverse_assets.cli.common import CliError
from cogniverse_resources.config_store import dump_config, open_config_store
from cogniverse_resources.tenant import routing_config_field_names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tenants", help="manage tenants and their optimization settings")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list")
    for action in ("add", "show", "set", "disable", "enable"):
        action_parser = actions.add_parser(action)
        action_parser.add_argument("tenant")
        if action == "add":
            action_parser.add_argument(
                "--set", action="append", metavar="KEY=VALUE", help="initial setting (repeatable)"
            )
        if action == "set":
            action_parser.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    parser.set_defaults(func=cmd_tenants)


def parse_settings(pairs: list[str]) -> dict[str, str]:
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


def cmd_tenants(args: argparse.Namespace) -> int:
    store = open_config_store()
    if args.action == "list":
        configs = store.list()
        if not configs:
            print("no tenants (add one with `cogniverse tenants add NAME`)")
        for config in configs:
            state = "enabled" if config.enable_auto_optimization else "disabled"
            print(
                f"{config.tenant_id:24s} {state:9s} interval={config.optimization_interval_seconds}s "
                f"min_samples={config.min_samples_for_optimization} optimizer={config.preferred_optimizer}"
            )
        return 0
    if args.action == "add":
        config = store.add(args.tenant, **parse_settings(args.set or []))
        print(f"added tenant {config.tenant_id}")
    elif args.action == "show":
        config = store.get(args.tenant)
    elif args.action == "set":
        config = store.update(args.tenant, **parse_settings(args.settings))
    elif args.action in ("disable", "enable"):
        config = store.update(args.tenant, enable_auto_optimization=args.action == "enable")
    else:  # pragma: no cover - argparse restricts actions
        raise CliError(f"unknown action {args.action}")
    print(dump_config(config))
    return 0
