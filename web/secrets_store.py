"""Secrets that must exist but were not configured: made once, kept in the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def persistent_secret(data_dir: Path, name: str) -> str:
    """Read ``data_dir/name``, creating it (mode 600) with a fresh random value if absent."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
