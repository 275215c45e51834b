"""A throwaway ``phoenix serve`` (SQLite in a temp dir) for one benchmark run."""

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cogniverse_resources import stack
from cogniverse_resources.phoenix import PhoenixResource


@contextmanager
def private_phoenix(prefix: str, root: Path | None = None) -> Iterator[tuple[Path, PhoenixResource]]:
    """Start Phoenix on free ports in a new temp folder (or on the data an earlier run left in
    ``root``); yield (folder, resource); stop it. The folder is kept."""
    root = root or Path(tempfile.mkdtemp(prefix=prefix))
    port, grpc_port = stack.free_port(), stack.free_port()
    service = stack.phoenix_service(working_dir=root / "phoenix", port=port, grpc_port=grpc_port, directory=root)
    service.start()
    try:
        yield root, PhoenixResource.from_env(endpoint=stack.phoenix_url(port))
    finally:
        service.stop()
