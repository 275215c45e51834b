"""A throwaway ``phoenix serve`` for one benchmark run: SQLite in a temp dir, or a new database on
a Postgres server (``COGNIVERSE_BENCH_POSTGRES_URL``, default the local one at 127.0.0.1:5432)."""

import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

from cogniverse_resources import stack
from cogniverse_resources.artifacts import ArtifactStore, DSPyModuleIOManager
from cogniverse_resources.config_store import ConfigStoreResource
from cogniverse_resources.content import ContentBackendResource
from cogniverse_resources.lm import LanguageModelResource
from cogniverse_resources.phoenix import PhoenixResource
from cogniverse_resources.redaction import redact_url

BACKENDS = ("sqlite", "postgres")
DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# Only the database's name is written down (for --reuse), never the server URL and its password.
DATABASE_NAME_FILE = "postgres_database"


@contextmanager
def private_phoenix(
    prefix: str,
    root: Path | None = None,
    backend: str = "sqlite",
    keep_database: bool = False,
    read_database: bool = False,
    **overrides,
) -> Iterator[tuple[Path, PhoenixResource]]:
    """Start Phoenix on free ports in a new temp folder (or on the data an earlier run left in
    ``root``); yield (folder, resource); stop it. The folder is kept; a Postgres database is
    dropped afterwards unless ``keep_database`` (then ``root`` can be reused). ``read_database``
    gives the resource Phoenix's database (either backend) as its ``read_database_url``;
    ``overrides`` are other resource fields (set when it is built: Dagster rebuilds a resource
    from those, so a ``model_copy`` update would be lost in a sensor)."""
    root = root or Path(tempfile.mkdtemp(prefix=prefix))
    port, grpc_port = stack.free_port(), stack.free_port()
    with _database(root, backend, keep_database) as database_url:
        service = stack.phoenix_service(
            working_dir=root / "phoenix", port=port, grpc_port=grpc_port, directory=root, database_url=database_url
        )
        service.start(stop_with_parent=True)
        try:
            if read_database:
                overrides["read_database_url"] = database_url or stack.sqlite_phoenix_database_url(root / "phoenix")
            yield root, PhoenixResource.from_env(endpoint=stack.phoenix_url(port), **overrides)
        finally:
            service.stop()


def lane_resources(root: Path, phoenix: PhoenixResource, lm: LanguageModelResource) -> dict:
    """What a lane's assets need, kept under a bench's ``root``: a SQLite config store (add the
    bench's tenants to it), an artifact folder, the bundled content catalog and ``lm``."""
    artifacts = ArtifactStore(root=str(root / "artifacts"))
    return {
        "phoenix": phoenix,
        "config_store": ConfigStoreResource(url=f"sqlite://{root}/config.sqlite"),
        "artifacts": artifacts,
        "lm": lm,
        "content": ContentBackendResource(vespa_url=""),
        "dspy_module_io_manager": DSPyModuleIOManager(root=artifacts.root),
    }


@contextmanager
def local_lane_stack(prefix: str) -> Iterator[tuple[Path, PhoenixResource, dg.DagsterInstance, dict]]:
    """What a bench that runs lanes on the local LM needs, under one new temp folder: a private
    Phoenix, the project's LM server, a Dagster instance and ``lane_resources`` for them; yields
    (folder, phoenix, instance, resources)."""
    with private_phoenix(prefix) as (root, phoenix), stack.private_lm_server(root / "lm"):
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            yield root, phoenix, instance, lane_resources(root, phoenix, LanguageModelResource.from_env())


def materialized_figures(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict:
    """The metadata values of ``asset``'s one materialization in ``result``."""
    (event,) = result.asset_materializations_for_node(asset.op.name)
    return {name: value.value for name, value in event.metadata.items()}


@contextmanager
def _database(root: Path, backend: str, keep: bool) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    with postgres_database(root / DATABASE_NAME_FILE, keep) as url:
        yield url


@contextmanager
def postgres_database(name_file: Path, keep: bool = False) -> Iterator[str]:
    """A new database on the bench's Postgres server (``COGNIVERSE_BENCH_POSTGRES_URL``), or the
    one ``name_file`` names from an earlier run; yields its URL; drops it afterwards unless ``keep``."""
    import psycopg2

    server = os.environ.get("COGNIVERSE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_SERVER)
    reused = name_file.exists()
    name = name_file.read_text().strip() if reused else f"cogniverse_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(server, connect_timeout=5)
    except psycopg2.OperationalError:
        admin = None
    if admin is None:  # outside the except block: psycopg2's message may quote the URL
        raise SystemExit(f"no Postgres at {redact_url(server)} (set COGNIVERSE_BENCH_POSTGRES_URL)")
    admin.autocommit = True
    try:
        if not reused:
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
            name_file.write_text(name)
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        if not keep:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            name_file.unlink(missing_ok=True)
        admin.close()
