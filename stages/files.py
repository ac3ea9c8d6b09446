"""Reading a user's input file safely: once, never through a symlink, only from inside given folders.

A path can change between a check and a read (the file rewritten, or replaced by a symlink to a
file elsewhere). So the file is opened once without following a final symlink, and the *open
file's* real location and type are checked, so a swap after the check cannot win; its bytes come
from that same descriptor. Refusals name the path as the user gave it, never where a link leads.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from stages.errors import StageInputError

DEFAULT_MAX_BYTES = 200 * 2**20
"""Largest input file read by default (a 45 s 24 kHz float wav is 4.3 MB; a large photo tens of MB)."""


def _open_no_follow(path: Path, field: str, shown: str) -> int:
    try:
        # O_NONBLOCK: a FIFO planted in the roots must not hang the open (regular files ignore it).
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        reason = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
        raise StageInputError(field, f"{shown}: the file {reason}", path=shown) from None


def read_inside(path: Path, roots: list[Path], field: str, max_bytes: int = DEFAULT_MAX_BYTES,
                shown: str | None = None) -> bytes:
    """The bytes of the regular file `path`, opened without following a final symlink and checked to
    really lie inside one of `roots` (resolved here). StageInputError(field) names `shown` (default:
    `path` as given) for a symlink, a file outside the roots, a folder, FIFO or device, an unreadable
    file, or one larger than `max_bytes` (only max_bytes + 1 bytes are ever read)."""
    shown = str(path) if shown is None else shown
    fd = _open_no_follow(Path(path), field, shown)
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not any(real.is_relative_to(Path(root).resolve()) for root in roots):
            raise StageInputError(field, f"{shown}: the file is outside the allowed roots", path=shown)
        # Checked on the descriptor before any read: a folder would fail the read with an OSError
        # that is no refusal, and a device could be read forever.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StageInputError(field, f"{shown}: the path is not a regular file", path=shown)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 8 * 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise StageInputError(field, f"{shown}: the file cannot be read: {exc.strerror}", path=shown) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise StageInputError(field, f"{shown}: the file is larger than {max_bytes // 2**20} MiB",
                              path=shown, max_bytes=max_bytes)
    return data
