"""Commit a fresh host video slab's pages on a thread of its own, while the slot is prepared.

A one-shot render (`vortexd render`) gets its ~850 MB slab from a fresh mapping, and the kernel
must zero every page of it before the warp may write there: ~0.2–1 s of CPU on a 2-core machine
when the memory was recently in use, and 6–9 s when it was not (measured here: the first slot
after a minute's pause spent ~10 s in the kernel; a 2 GiB populate took 15–24 s as a process's
first and 0.45 s as its second). Paid up front it delayed the whole slot; paid inside the warp
it cost more (a fault per page, mid-loop). Here it runs beside the prepare stage and the warp:

- in steps (vram.populate_in_steps: madvise MADV_POPULATE_WRITE, which lets go of the GIL),
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

import threading

import numpy as np

from vram import populate_in_steps


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
            for done in populate_in_steps(self._slab):
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
