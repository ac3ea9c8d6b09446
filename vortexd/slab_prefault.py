"""Commit a fresh host video slab's pages on a thread of its own, while the slot is prepared.

A one-shot render (`vortexd render`) gets its ~850 MB slab from a fresh mapping, and the kernel
must zero every page of it before the warp may write there: ~0.2–1 s of CPU on a 2-core machine
when the memory was recently in use, and 6–9 s when it was not (measured here: the first slot
after a minute's pause spent ~10 s in the kernel; a 2 GiB populate took 15–24 s as a process's
first and 0.45 s as its second). Paid up front it delayed the whole slot; paid inside the warp
it cost more (a fault per page, mid-loop). Here it runs beside the prepare stage and the warp:

- in steps of STEP_BYTES (madvise MADV_POPULATE_WRITE through ctypes, which lets go of the GIL),
  because one call over the whole slab holds the process's memory-map lock throughout: every
  other thread's mmap — a large numpy array, an extension module being imported — waited for it
  (a thread allocating beside a 2 GiB populate stalled 0.4–24 s; beside 8 MiB steps, ≤ 21 ms);
- in address order, so the warp waits only for the pages of the chunk it is about to write
  (`wait_for`) while the later ones are still being committed: a slow commit overlaps the warp
  instead of preceding it.

A machine out of memory is still refused before a frame lands where it has no page: `wait_for`
raises the MemoryError the commit met.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import mmap
import os
import threading

import numpy as np

_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
"""Linux ≥ 5.14 (uapi value, stable); Python 3.11's mmap module does not name it yet."""

STEP_BYTES = 8 << 20
"""Bytes committed per call: 4 huge pages; small enough that other threads' mmaps wait ≤ ~20 ms
for the lock, large enough that the calls' own cost is nothing (~100 calls per slab)."""


class SlabPrefault:
    """Commits `slab`'s pages, in address order, on a daemon thread from construction."""

    def __init__(self, slab: np.ndarray) -> None:
        self._slab = slab
        self._error: BaseException | None = None
        self._committed_bytes = 0
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="slab-prefault", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for done in _populate(self._slab):
                with self._progress:
                    self._committed_bytes = done
                    self._progress.notify_all()
        except BaseException as exc:  # raised by wait_for(), on the caller's thread
            self._error = exc
        finally:
            with self._progress:  # done or failed: wake every waiter to look
                self._progress.notify_all()

    def wait_for(self, n_bytes: int) -> None:
        """Block until the slab's first `n_bytes` are committed; MemoryError when the machine could
        not give them (the error the commit met, whichever part of the slab it was in)."""
        n_bytes = min(int(n_bytes), self._slab.nbytes)
        with self._progress:
            self._progress.wait_for(lambda: self._committed_bytes >= n_bytes or self._error is not None
                                    or not self._thread.is_alive())
        if self._error is not None:
            raise self._error

    def wait(self) -> None:
        """Block until every page is committed; MemoryError when the machine could not give them."""
        self._thread.join()
        if self._error is not None:
            raise self._error

    def wait_quietly(self) -> None:
        """Block until the thread is done, whatever it met (the caller is failing already)."""
        self._thread.join()


def _populate(slab: np.ndarray):
    """Commit the pages under `slab` (contiguous) in address order, in the kernel where it can,
    else by writing zeros; yields how many of its bytes are committed after each step."""
    page = mmap.PAGESIZE
    start = slab.ctypes.data
    # Only whole pages inside the slab: an edge page shared with other memory is touched on first use.
    first, last = -(-start // page) * page, (start + slab.nbytes) // page * page
    if last > first and _madvise_populate(first, min(STEP_BYTES, last - first)):
        for address in range(first + STEP_BYTES, last, STEP_BYTES):
            yield address - start
            _madvise_populate(address, min(STEP_BYTES, last - address))
        yield slab.nbytes
        return
    flat = slab.reshape(-1)
    for offset in range(0, flat.size, STEP_BYTES):  # fallback (old kernel): numpy lets go of the GIL per block
        flat[offset : offset + STEP_BYTES] = 0
        yield min(offset + STEP_BYTES, flat.size)
    yield slab.nbytes


@functools.lru_cache(maxsize=1)
def _madvise():
    """libc's madvise, typed (looked up once: find_library runs ldconfig)."""
    madvise = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _madvise_populate(address: int, length: int) -> bool:
    """MADV_POPULATE_WRITE on [address, address+length); False where the kernel does not know it."""
    if _madvise()(address, length, _MADV_POPULATE_WRITE) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EINVAL:
        return False
    if code in (errno.ENOMEM, errno.EFAULT, errno.EAGAIN):
        raise MemoryError(f"could not commit {length} B for the video slab: {os.strerror(code)}")
    raise OSError(code, f"committing the video slab's memory failed: {os.strerror(code)}")
