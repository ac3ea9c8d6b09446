"""Atomic publication of a slot folder: a reader sees the whole slot or nothing.

Files are written into a hidden temporary folder inside `out_root` (same filesystem, so the
final rename is atomic), hashed into manifest.json, fsynced, and renamed to `out_root/slot_id`.
The rename refuses to replace an existing slot (renameat2 RENAME_NOREPLACE on Linux), so two
writers racing for one slot id cannot overwrite each other.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from stages.durable import fsync_path
from stages.errors import StageInputError

MANIFEST_NAME = "manifest.json"
TEMP_PREFIX = ".publishing-"
"""Temporary folders are named `.publishing-<slot_id>-<pid>-<random>`: hidden from listings,
and the pid tells `clean_stale_temp` whether their writer is still alive."""

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


def publish_slot(out_root: Path, slot_id: str, write: Callable[[Path], dict]) -> Path:
    """Publish `out_root/slot_id` atomically and return its path.

    `write(tmp)` writes the slot's files into the temporary folder `tmp` and returns the manifest
    dict; this adds `"files": {name: {"sha256", "bytes"}}`, writes manifest.json, fsyncs, and
    renames the folder into place. Raises SlotExistsError (a FileExistsError) if the slot is
    already published — before calling `write`, and again atomically at the rename. On any
    exception the temporary folder is removed, so no partial slot is ever left behind.
    """
    _check_slot_id(slot_id)
    out_root = Path(out_root)
    target = out_root / slot_id
    if target.exists():
        raise SlotExistsError(target)
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{slot_id}-{os.getpid()}-", dir=out_root))
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
        # mkdtemp makes 0700 folders; a published slot is read by other users (players, uploaders).
        os.chmod(tmp, 0o755)
        fsync_path(tmp)
        _rename_no_replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Make the rename itself durable: it lives in out_root's directory entry.
    fsync_path(out_root)
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temp(out_root: Path) -> list[Path]:
    """Remove temporary folders left in `out_root` by publishers that died; return what was removed.

    A folder whose writer process is still running is left alone, so this is safe to call while
    other processes publish. Folders with an unparseable name are treated as stale.
    """
    out_root = Path(out_root)
    removed = []
    if not out_root.is_dir():
        return removed
    for entry in out_root.iterdir():
        if not (entry.name.startswith(TEMP_PREFIX) and entry.is_dir()):
            continue
        # Name: .publishing-<slot_id>-<pid>-<random>; slot ids may contain '-', the pid is second-last.
        parts = entry.name[len(TEMP_PREFIX):].rsplit("-", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid is not None and _pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
