"""Which environment variable sets which resource field: the one mapping, ``RESOURCE_ENV``.

It has two readers:

- ``env_vars``: what ``cogniverse_assets.deployment.resources()`` gives Dagster, ``dg.EnvVar(name)``
  for every variable that is set, so the Dagster UI and stored runs show the variable's name, never
  its value (LM keys, store URLs with passwords).
- ``from_env`` (and the ``from_env`` classmethod of each resource): plain resource instances for
  code that runs outside Dagster (the CLI, the router runtime, traffic, the demo, benchmarks).

A variable that is unset or empty leaves its field at the resource's own default: the embedded
local stack. Where several variables name one field, the first that is set wins. The stack's own
settings (``PHOENIX_PORT``, ``COGNIVERSE_LM_PORT``, ``COGNIVERSE_DATA_DIR``) are not resource fields;
the defaults derived from them are computed when a resource is built, not when it is imported.

This module imports no resource (the resources import it), so the mapping names them by class.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import dagster as dg

T = TypeVar("T")


@dataclass(frozen=True)
class EnvSetting:
    """The variables that set one field, in order of precedence."""

    variables: tuple[str, ...]
    # For a field that is not a string: turns the variable's text into the field's value. Such a
    # value is passed to Dagster as itself (``dg.EnvVar`` carries only strings), so it must not be
    # a secret.
    parse: Callable[[str], Any] | None = None

    def variable(self, environ: Mapping[str, str]) -> str | None:
        """The first of ``variables`` that is set and not empty."""
        return next((name for name in self.variables if environ.get(name)), None)


def parse_vespa_field_map(raw: str) -> dict[str, str]:
    """``VESPA_FIELD_MAP``: a JSON object, our field name -> Vespa field name (blank: none)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"VESPA_FIELD_MAP is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError('VESPA_FIELD_MAP must be a JSON object, e.g. {"title": "headline"}')
    return {str(key): str(field) for key, field in value.items()}


def _env(*variables: str, parse: Callable[[str], Any] | None = None) -> EnvSetting:
    return EnvSetting(variables, parse)


def _count_concurrency(value: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"COGNIVERSE_PHOENIX_COUNT_CONCURRENCY={value!r}: use a whole number from 1 to 16")
    return int(value)


_ARTIFACTS_ROOT = {"root": _env("COGNIVERSE_ARTIFACTS_URL")}

# resource class name -> {field: the variables that set it}
RESOURCE_ENV: dict[str, dict[str, EnvSetting]] = {
    "PhoenixResource": {
        "endpoint": _env("PHOENIX_ENDPOINT", "PHOENIX_COLLECTOR_ENDPOINT"),
        "api_key": _env("PHOENIX_API_KEY"),
        "project_prefix": _env("PHOENIX_PROJECT_PREFIX"),
        # Hosts a tenant's own phoenix_endpoint may name (comma-separated names or *.suffix).
        "allowed_hosts": _env("COGNIVERSE_PHOENIX_ALLOWED_HOSTS"),
        "count_concurrency": _env("COGNIVERSE_PHOENIX_COUNT_CONCURRENCY", parse=_count_concurrency),
        # Phoenix's own Postgres database, read by the sensor's exact counts and ingestion's feedback
        # read (may hold a password).
        "read_database_url": _env("COGNIVERSE_PHOENIX_READ_DATABASE_URL"),
    },
    "LanguageModelResource": {
        "student_model": _env("ROUTER_OPTIMIZER_STUDENT_MODEL"),
        "student_api_base": _env("ROUTER_OPTIMIZER_STUDENT_API_BASE"),
        "student_api_key": _env("ROUTER_OPTIMIZER_STUDENT_KEY"),
        "teacher_model": _env("ROUTER_OPTIMIZER_TEACHER_MODEL"),
        "teacher_api_base": _env("ROUTER_OPTIMIZER_TEACHER_API_BASE"),
        "teacher_api_key": _env("ROUTER_OPTIMIZER_TEACHER_KEY"),
    },
    "ConfigStoreResource": {
        "url": _env("CONFIG_STORE_URL"),
    },
    "ContentBackendResource": {
        "vespa_url": _env("VESPA_URL"),
        "vespa_schema": _env("VESPA_SCHEMA"),
        "vespa_rank_profile": _env("VESPA_RANK_PROFILE"),
        "vespa_field_map": _env("VESPA_FIELD_MAP", parse=parse_vespa_field_map),
    },
    "ArtifactStore": _ARTIFACTS_ROOT,
    "DSPyModuleIOManager": _ARTIFACTS_ROOT,
}


def _settings(resource: type | str) -> dict[str, EnvSetting]:
    name = resource if isinstance(resource, str) else resource.__name__
    try:
        return RESOURCE_ENV[name]
    except KeyError:
        raise KeyError(f"no environment mapping for {name}; known: {', '.join(RESOURCE_ENV)}") from None


def env_values(resource: type | str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{field: value}`` for each field of ``resource`` whose variable is set (parsed where needed)."""
    environ = os.environ if environ is None else environ
    values = {}
    for field, setting in _settings(resource).items():
        variable = setting.variable(environ)
        if variable:
            raw = environ[variable]
            values[field] = setting.parse(raw) if setting.parse else raw
    return values


def env_vars(resource: type | str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{field: dg.EnvVar(variable)}`` for each field of ``resource`` whose variable is set; a field
    with a parser gets its parsed value instead."""
    environ = os.environ if environ is None else environ
    config = {}
    for field, setting in _settings(resource).items():
        variable = setting.variable(environ)
        if variable:
            config[field] = setting.parse(environ[variable]) if setting.parse else dg.EnvVar(variable)
    return config


def from_env(resource: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """``resource`` built from the environment; ``overrides`` win over it."""
    return resource(**{**env_values(resource, environ), **overrides})
