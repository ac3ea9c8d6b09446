"""The Kokoro cache folder: where the assembled and patched models live, written safely.

Two daemons (or a daemon and a benchmark) may start at the same moment and both find the cache
empty. Every writer therefore takes an exclusive `fcntl` lock on the folder's lock file, checks
again whether the file appeared while it waited, and writes to a private temporary name that is
renamed into place only once complete and verified. A reader never sees a half-written model,
and a crash leaves at most a stale temporary file, removed by the next writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from stages.durable import fsync_path

CACHE_ENV = "VORTEX_KOKORO_CACHE"
"""Environment variable naming the cache folder (wins over the XDG default)."""

LOCK_NAME = ".lock"
TEMP_SUFFIX = ".partial"


def default_cache_dir() -> Path:
    """$VORTEX_KOKORO_CACHE, else $XDG_CACHE_HOME/vortex/kokoro, else ~/.cache/vortex/kokoro."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vortex" / "kokoro"


@contextlib.contextmanager
def locked(cache_dir: Path) -> Iterator[None]:
    """Hold the cache folder's exclusive lock (blocking) for the duration of the block.

    flock locks belong to the open file description, so they are released when the process
    dies, however it dies: a killed writer never leaves the cache locked.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temps(cache_dir: Path) -> list[Path]:
    """Delete temporary files left by writers that died. Call only while holding the lock."""
    removed = []
    for path in cache_dir.glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def publish_file(destination: Path, write: Callable[[Path], None]) -> Path:
    """Create `destination` atomically: `write(temp_path)` fills a temporary file, then rename.

    If `write` raises, the temporary file is removed and the exception propagates; nothing
    appears at `destination`. The caller holds the cache lock.
    """
    temp = destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        write(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_path(destination.parent)
    return destination
