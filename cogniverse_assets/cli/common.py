"""What several commands share: the user-facing error and the ``--module`` option."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from cogniverse_assets.modules.registry import ROUTING_MODULES


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "value"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def add_module_option(parser: argparse.ArgumentParser, **kwargs) -> None:
    """``--module``, its choices the routing modules of the registry."""
    parser.add_argument("--module", choices=list(ROUTING_MODULES), **kwargs)
