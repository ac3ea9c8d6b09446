"""Commit a fresh host video slab's pages on a thread of its own, while the slot is prepared.

A one-shot render (`vortexd render`) gets its ~850 MB slab from a fresh mapping, and the kernel
must zero every page of it before the warp may write there: ~1 s of CPU on a 2-core machine,
whoever pays it. Paid up front it delayed the whole slot; paid inside the warp it cost more
(a fault per page, mid-loop). Here it runs beside the prepare stage, whose work is mostly
Python holding the GIL (imports, the face mesh's set-up) and leaves the second core idle: the
populate call (madvise MADV_POPULATE_WRITE through ctypes, which lets go of the GIL) fills that
core. `wait()` before the warp still turns a machine out of memory into a refusal before any
frame is rendered, as the up-front prefault did.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import threading

import numpy as np

_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
"""Linux ≥ 5.14 (uapi value, stable); Python 3.11's mmap module does not name it yet."""


class SlabPrefault:
    """Commits `slab`'s pages on a daemon thread from construction; `wait()` joins it."""

    def __init__(self, slab: np.ndarray) -> None:
        self._slab = slab
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="slab-prefault", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _populate(self._slab)
        except BaseException as exc:  # raised by wait(), on the caller's thread
            self._error = exc

    def wait(self) -> None:
        """Block until every page is committed; MemoryError when the machine could not give them."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def wait_quietly(self) -> None:
        """Block until the thread is done, whatever it met (the caller is failing already)."""
        self._thread.join()


def _populate(slab: np.ndarray) -> None:
    """Commit the pages under `slab` (contiguous): in the kernel where it can, else by writing zeros."""
    page = mmap.PAGESIZE
    start = slab.ctypes.data
    # Only whole pages inside the slab: an edge page shared with other memory is touched on first use.
    first, last = -(-start // page) * page, (start + slab.nbytes) // page * page
    if last > first and _madvise_populate(first, last - first):
        return
    flat = slab.reshape(-1)
    step = 64 << 20
    for offset in range(0, flat.size, step):  # fallback (old kernel): numpy lets go of the GIL per block
        flat[offset : offset + step] = 0


def _madvise_populate(address: int, length: int) -> bool:
    """MADV_POPULATE_WRITE on [address, address+length); False where the kernel does not know it."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    if libc.madvise(address, length, _MADV_POPULATE_WRITE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EINVAL:
        return False
    if code in (errno.ENOMEM, errno.EFAULT, errno.EAGAIN):
        raise MemoryError(f"could not commit {length} B for the video slab: {os.strerror(code)}")
    raise OSError(code, f"committing the video slab's memory failed: {os.strerror(code)}")
