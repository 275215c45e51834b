"""Where the embedded stack keeps its files.

Everything lives under one data folder (``COGNIVERSE_DATA_DIR``, default ``.cogniverse`` at the
repository root) so ``rm -rf .cogniverse`` is a full reset and tests can point it at a temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    path = Path(os.environ.get("COGNIVERSE_DATA_DIR", REPO_ROOT / ".cogniverse")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
