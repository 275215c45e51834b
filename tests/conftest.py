"""Real parts for the tests: a session-scoped ``phoenix serve`` (SQLite in a temp dir), a Redis
server, and — for tests marked ``lm`` — the local LM server. All started by the project's own
stack code on free ports, so a developer's running stack is never touched.

A service that cannot be had here (no ``redis-server``, no Postgres) fails the tests that need it
when ``CI`` is set (CI runs ``make test`` with ``CI=true``); elsewhere they are skipped, with a
warning and a banner at the end of the run naming what was missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from cogniverse_resources import stack  # noqa: E402
from cogniverse_resources.phoenix import PhoenixResource  # noqa: E402
from cogniverse_resources.redaction import redact_url, redact_urls  # noqa: E402

# What was missing in this session (shown at the end of a run that skipped tests because of it).
MISSING_SERVICES: set[str] = set()


class MissingServiceWarning(UserWarning):
    """A test was skipped because a service it needs is not available on this machine."""


def in_ci(environ=os.environ) -> bool:
    """``CI`` is set to anything but empty, ``0`` or ``false`` (CI systems set ``CI=true``)."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_service(message: str) -> NoReturn:
    """A service a test needs is missing: a failure in CI, a loud skip elsewhere."""
    if in_ci():
        pytest.fail(f"{message} — CI is set, so a missing service fails instead of skipping", pytrace=False)
    MISSING_SERVICES.add(message)
    warnings.warn(f"test skipped, service missing: {message}", MissingServiceWarning, stacklevel=2)
    pytest.skip(f"service missing: {message} (with CI set this fails)")


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook
    if MISSING_SERVICES:
        terminalreporter.write_sep("!", "tests SKIPPED because services are missing (CI=true fails them)", yellow=True)
        for message in sorted(MISSING_SERVICES):
            terminalreporter.write_line(f"  {message}", yellow=True, bold=True)


@pytest.fixture(scope="session", autouse=True)
def isolated_data_dir(tmp_path_factory) -> Path:
    """Every test session gets its own data folder (config store, run files, artifacts)."""
    path = tmp_path_factory.mktemp("cogniverse-data")
    # A developer's Phoenix database setting must not send the tests' Phoenix servers into it.
    cleared = ("CONFIG_STORE_URL", *stack.PHOENIX_DATABASE_VARIABLES)
    previous = {key: os.environ.get(key) for key in ("COGNIVERSE_DATA_DIR", *cleared)}
    os.environ["COGNIVERSE_DATA_DIR"] = str(path)
    for key in cleared:
        os.environ.pop(key, None)
    # The model is large and immutable: share the developer's verified copy when there is one.
    shared_model = stack.REPO_ROOT / ".cogniverse" / "models" / stack.LOCAL_MODEL_FILE
    os.environ.setdefault("COGNIVERSE_LM_MODEL_PATH", str(shared_model))
    yield path
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


PHOENIX_BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc) -> None:  # noqa: ANN001 - pytest's hook
    """A test marked ``phoenix_backends`` runs once per Phoenix storage backend: its ``phoenix``
    (its own or through a fixture such as ``tenant_env``) is then the SQLite or the Postgres one."""
    if metafunc.definition.get_closest_marker("phoenix_backends") is None:
        return
    if "phoenix_backend" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid} is marked phoenix_backends but uses no Phoenix")
    metafunc.parametrize("phoenix_backend", PHOENIX_BACKENDS, indirect=True)


@pytest.fixture
def phoenix_backend(request) -> str:
    """Which Phoenix ``phoenix`` is: ``sqlite`` unless the test is marked ``phoenix_backends``."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def phoenix(request, phoenix_backend) -> PhoenixResource:
    """A real Phoenix server (one per backend for the whole session)."""
    return request.getfixturevalue(f"phoenix_{phoenix_backend}")


@pytest.fixture
def phoenix_database(request, phoenix_backend) -> str:
    """The URL of ``phoenix``'s own database, as ``COGNIVERSE_PHOENIX_READ_DATABASE_URL`` names it."""
    return request.getfixturevalue(f"phoenix_{phoenix_backend}_database")


@pytest.fixture(scope="session")
def phoenix_sqlite_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phoenix")


@pytest.fixture(scope="session")
def phoenix_sqlite_database(phoenix_sqlite_root, phoenix_sqlite) -> str:
    """The URL of the session's SQLite Phoenix's database file."""
    return stack.sqlite_phoenix_database_url(phoenix_sqlite_root / "working")


@pytest.fixture(scope="session")
def phoenix_sqlite(phoenix_sqlite_root, isolated_data_dir) -> PhoenixResource:
    """The session's Phoenix on SQLite; ``PHOENIX_ENDPOINT`` names it (``from_env`` finds it)."""
    root = phoenix_sqlite_root
    port, grpc_port = stack.free_port(), stack.free_port()
    service = stack.phoenix_service(working_dir=root / "working", port=port, grpc_port=grpc_port, directory=root)
    service.start(stop_with_parent=True)
    endpoint = stack.phoenix_url(port)
    os.environ["PHOENIX_ENDPOINT"] = endpoint
    try:
        yield PhoenixResource(endpoint=endpoint)
    finally:
        os.environ.pop("PHOENIX_ENDPOINT", None)
        service.stop()


@pytest.fixture(scope="session")
def phoenix_postgres_database() -> str:
    """The URL of the database the session's Postgres Phoenix stores into (dropped afterwards)."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def phoenix_postgres(tmp_path_factory, isolated_data_dir, phoenix_postgres_database) -> PhoenixResource:
    """The session's Phoenix on Postgres: its own fresh database on the test Postgres server
    (``COGNIVERSE_TEST_POSTGRES_URL``). Missing Postgres: skipped, in CI a failure.
    ``PHOENIX_ENDPOINT`` keeps naming the SQLite one."""
    root = tmp_path_factory.mktemp("phoenix-postgres")
    port, grpc_port = stack.free_port(), stack.free_port()
    service = stack.phoenix_service(
        working_dir=root / "working",
        port=port,
        grpc_port=grpc_port,
        directory=root,
        database_url=phoenix_postgres_database,
    )
    service.start(stop_with_parent=True)
    try:
        yield PhoenixResource(endpoint=stack.phoenix_url(port))
    finally:
        service.stop()  # before the database is dropped


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """``COGNIVERSE_TEST_REDIS_URL``, else a private redis-server on a free port."""
    url = os.environ.get("COGNIVERSE_TEST_REDIS_URL")
    if url:
        yield url
        return
    with private_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@contextmanager
def private_redis(workdir: Path, password: str | None = None):
    """A redis-server on a free port (nothing persisted); yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        missing_service("no Redis: set COGNIVERSE_TEST_REDIS_URL or install redis-server")
    port = stack.free_port()
    auth = ["--requirepass", password] if password else []
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *auth,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    try:
        yield f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def local_lm(tmp_path_factory):
    """The real local LM server (Qwen2.5-Coder-0.5B GGUF via llama.cpp); returns its api_base."""
    with stack.private_lm_server(tmp_path_factory.mktemp("lm")):  # LanguageModelResource() points at it
        yield stack.local_lm_api_base()


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty database on ``COGNIVERSE_TEST_POSTGRES_URL`` (default: the local server at
    127.0.0.1:5432, trust auth), dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@contextmanager
def fresh_postgres_database():
    """A new, empty database on the test Postgres server; yields its URL; drops it afterwards
    (``WITH (FORCE)``: a server still connected to it must not leave it behind)."""
    import uuid
    from urllib.parse import urlparse, urlunparse

    import psycopg2

    server = os.environ.get("COGNIVERSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"cogniverse_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(server, connect_timeout=5)
    except psycopg2.OperationalError as error:
        admin, reason = None, redact_urls(str(error)).strip()
    if admin is None:  # outside the except block: the report is the message, not a chained traceback
        missing_service(f"no Postgres at {redact_url(server)} (set COGNIVERSE_TEST_POSTGRES_URL): {reason}")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunparse(urlparse(server)._replace(path=f"/{name}"))
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
