"""Durability helpers for atomic writers (published slots, the Kokoro model cache)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file or a directory entry to disk.

    A rename is durable only once the directory holding it is synced too, so atomic writers call
    this on the file, then on its folder after the rename.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
