"""A throwaway ``phoenix serve`` (SQLite in a temp dir) for one benchmark run."""

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cogniverse_resources import stack
from cogniverse_resources.phoenix import PhoenixResource


@contextmanager
def private_phoenix(prefix: str) -> Iterator[tuple[Path, PhoenixResource]]:
    """Start Phoenix on free ports in a new temp folder; yield (folder, resource); stop it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    port, grpc_port = stack.free_port(), stack.free_port()
    service = stack.phoenix_service(working_dir=root / "phoenix", port=port, grpc_port=grpc_port, directory=root)
    service.start()
    try:
        yield root, PhoenixResource(endpoint=stack.phoenix_url(port))
    finally:
        service.stop()
