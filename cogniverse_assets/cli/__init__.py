"""``cogniverse``: the operator's command line (stack, tenants, traffic, the local all-in-one run)."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from cogniverse_assets.cli import deployments, optimize, run, stack, tenants, traffic
from cogniverse_assets.cli import eval as evaluate
from cogniverse_assets.cli.common import CliError, validation_message
from cogniverse_resources.config_store import TenantNotFound
from cogniverse_resources.stack import StackError
from cogniverse_resources.tenant import InvalidTenantId

# Each registers its sub-commands, in the order `cogniverse --help` lists them.
COMMAND_GROUPS = (stack, tenants, traffic, optimize, evaluate, deployments, run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogniverse", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, StackError, InvalidTenantId, TenantNotFound, ValueError, FileNotFoundError) as error:
        message = validation_message(error) if isinstance(error, ValidationError) else str(error)
        print(f"cogniverse: error: {message}", file=sys.stderr)
        return 2
