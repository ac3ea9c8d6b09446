"""One daemon per state folder: an exclusive lock, taken before anything else is opened.

The lock is an flock on `<state folder>/vortexd.lock`, held for the life of the process (the
kernel drops it when the process dies, however it dies), with the holder's pid written inside
for the refusal message. A second daemon on the same folder stops before it touches the
journal, the arena, the metrics port or the socket.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "vortexd.lock"


class AlreadyRunning(RuntimeError):
    """Another daemon holds the state folder's lock."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"vortexd is already running on state folder {state_dir} ({holder})")
        self.pid = pid


class InstanceLock:
    """The held lock; `release()` (or process exit) gives it up."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self) -> None:
        """Unlock and close (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def acquire_instance_lock(state_dir: Path) -> InstanceLock:
    """Lock `state_dir` for this process, or raise AlreadyRunning naming the holder's pid."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(state_dir, int(text) if text.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return InstanceLock(fd, path)
