"""Atomic publication of a slot folder: a reader sees the whole slot or nothing.

Files are written into a hidden temporary folder inside `out_root` (same filesystem, so the
final rename is atomic), hashed into manifest.json, fsynced, and renamed to `out_root/slot_id`.
The rename refuses to replace an existing slot (renameat2 RENAME_NOREPLACE on Linux), so two
writers racing for one slot id cannot overwrite each other.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from stages.durable import fsync_path
from stages.errors import StageInputError

MANIFEST_NAME = "manifest.json"
TEMP_PREFIX = ".publishing-"
"""Temporary folders are named `.publishing-<slot_id>-<random>`: hidden from listings. Beside
each lies `<folder>.lock`, which its writer holds an flock on while it writes: the kernel drops
the lock when the writer dies (a zombie or a reused pid cannot hold it), which is how
`clean_stale_temp` tells a dead writer's folder from a live one."""
LOCK_SUFFIX = ".lock"

_SLOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_HASH_CHUNK_BYTES = 1 << 20


class SlotExistsError(FileExistsError):
    """A slot with this id is already published; published slots are never overwritten."""

    def __init__(self, slot_dir: Path) -> None:
        super().__init__(errno.EEXIST, f"slot {slot_dir.name!r} is already published", str(slot_dir))
        self.slot_dir = slot_dir


def _check_slot_id(slot_id: str) -> None:
    # One plain path component: no separators, no leading dot (hidden names are our temp dirs).
    if not isinstance(slot_id, str) or not _SLOT_ID.fullmatch(slot_id):
        raise StageInputError(
            "slot_id", "must be 1–128 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit", slot_id=slot_id,
        )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `folder` (names relative, '/'-separated), each fsynced."""
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        fsync_path(path)
        table[name] = {"sha256": _sha256_of(path), "bytes": path.stat().st_size}
    return table


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _rename_no_replace(source: Path, target: Path) -> None:
    """Rename `source` to `target`, failing with SlotExistsError if `target` exists (atomically)."""
    renameat2 = _libc_renameat2()
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise SlotExistsError(target)
        if err not in (errno.EINVAL, errno.ENOSYS):  # other errors are real; those two mean "unsupported here"
            raise OSError(err, os.strerror(err), str(target))
    # Fallback (filesystem without RENAME_NOREPLACE): a plain rename replaces an *empty*
    # directory, so check first; the race window is tiny and only between two writers.
    if target.exists():
        raise SlotExistsError(target)
    os.rename(source, target)


@dataclass(frozen=True)
class PublishedSlot:
    """A published slot folder and the manifest written into it (with its files table)."""

    path: Path
    manifest: dict[str, Any]


def publish_slot(out_root: Path, slot_id: str, write: Callable[[Path], dict],
                 gate: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> PublishedSlot:
    """Publish `out_root/slot_id` atomically; return its path and manifest.

    `write(tmp)` writes the slot's files into the temporary folder `tmp` and returns the manifest
    dict; this adds `"files": {name: {"sha256", "bytes"}}`, writes manifest.json, fsyncs, and
    renames the folder into place. Raises SlotExistsError (a FileExistsError) if the slot is
    already published — before calling `write`, and again atomically at the rename. On any
    exception the temporary folder is removed, so no partial slot is ever left behind. The final
    rename runs inside `gate()`, which may refuse it (raise): a slot withdrawn while it was being
    written is then never published.
    """
    _check_slot_id(slot_id)
    out_root = Path(out_root)
    target = out_root / slot_id
    if target.exists():
        raise SlotExistsError(target)
    out_root.mkdir(parents=True, exist_ok=True)
    with _writer_lock(out_root, slot_id) as tmp:
        manifest = _write_and_rename(tmp, target, write, gate)
    # Make the rename itself durable: it lives in out_root's directory entry.
    fsync_path(out_root)
    return PublishedSlot(target, manifest)


@contextlib.contextmanager
def _writer_lock(out_root: Path, slot_id: str) -> Iterator[Path]:
    """A new temporary folder, with its lock file created and locked first (so a sweeper never
    sees the folder unlocked while its writer lives); unlocked and removed at the end."""
    fd, lock_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{slot_id}-", suffix=LOCK_SUFFIX, dir=out_root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = Path(lock_name[: -len(LOCK_SUFFIX)])
        tmp.mkdir(mode=0o700)
        yield tmp
    finally:
        os.unlink(lock_name)
        os.close(fd)


def _write_and_rename(tmp: Path, target: Path, write: Callable[[Path], dict],
                      gate: Callable[[], contextlib.AbstractContextManager]) -> dict[str, Any]:
    """Fill `tmp` (files, manifest), make it durable and rename it to `target`; return the
    manifest. On any error remove it, so no partial slot is ever left behind."""
    try:
        manifest = write(tmp)
        if not isinstance(manifest, dict):
            raise TypeError(f"write() must return the manifest dict, got {type(manifest).__name__}")
        if "files" in manifest:
            raise ValueError('the manifest key "files" is filled in by publish_slot')
        if (tmp / MANIFEST_NAME).exists():
            raise ValueError(f"{MANIFEST_NAME} is written by publish_slot, not by write()")
        full = {**manifest, "files": _file_table(tmp)}
        text = json.dumps(full, indent=2, sort_keys=True, allow_nan=False)
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # The temporary folder is 0700; a published slot is read by other users (players, uploaders).
        os.chmod(tmp, 0o755)
        fsync_path(tmp)
        with gate():
            _rename_no_replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return full


def _writer_alive(lock_path: Path) -> bool:
    """Whether a writer still holds `lock_path` (a missing lock file: no writer)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def clean_stale_temp(out_root: Path) -> list[Path]:
    """Remove temporary folders (and lock files) left in `out_root` by publishers that died;
    return what was removed. A folder whose writer still holds its lock is left alone, so this is
    safe while other processes publish."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        return []
    removed = []
    for entry in sorted(out_root.iterdir()):
        if not entry.name.startswith(TEMP_PREFIX) or entry.name.endswith(LOCK_SUFFIX):
            continue
        lock = entry.with_name(entry.name + LOCK_SUFFIX)
        if _writer_alive(lock):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        lock.unlink(missing_ok=True)
        removed.append(entry)
    for lock in out_root.glob(f"{TEMP_PREFIX}*{LOCK_SUFFIX}"):
        # A writer that died between its rename and its unlock leaves only the lock file.
        if not lock.with_name(lock.name[: -len(LOCK_SUFFIX)]).exists() and not _writer_alive(lock):
            lock.unlink(missing_ok=True)
    return removed
