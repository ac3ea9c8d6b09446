"""A one-shot render's slab is committed beside the prepare stage, and whole before the warp."""

from __future__ import annotations

import numpy as np
import pytest

from vortexd import pipeline
from vortexd.slab_prefault import SlabPrefault


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_waiting_leaves_every_page_of_the_slab_committed_and_zero() -> None:
    slab = pipeline.allocate_slab(96, prefault=False)  # ~72 MiB, none of it touched yet
    before = _resident_bytes()
    SlabPrefault(slab).wait()
    # Committed: resident now, without the warp having written a byte (edge pages aside).
    assert _resident_bytes() - before >= slab.nbytes - (4 << 20)
    assert not slab[::7, ::61, ::59].any()


def test_the_slab_stays_writable_and_readable_after_its_prefault() -> None:
    slab = pipeline.allocate_slab(4, prefault=False)
    prefault = SlabPrefault(slab)
    prefault.wait()
    prefault.wait_quietly()  # waiting again is harmless
    slab[2] = 200
    assert int(slab[2].min()) == 200 and int(slab[1].max()) == 0
    assert isinstance(slab, np.ndarray) and slab.flags.writeable


def test_the_first_chunks_pages_are_ready_before_the_whole_slab_and_in_order() -> None:
    from vram import backing

    slab = pipeline.allocate_slab(240, prefault=False)  # ~180 MiB: ~23 commit steps
    prefault = SlabPrefault(slab)
    first_chunk = slab[:4].nbytes
    prefault.wait_for(first_chunk)
    # The commit goes in address order: the first chunk's pages are there, written or not.
    slab[:4] = 7
    prefault.wait()
    assert slab.nbytes > backing.POPULATE_STEP_BYTES * 8
    assert int(slab[:4].min()) == 7 and not slab[4:].any()
    prefault.wait_for(slab.nbytes)  # after the end: returns at once


def test_a_commit_that_fails_is_raised_to_whoever_waits_for_its_pages(monkeypatch) -> None:
    from vram import backing

    def refused(address: int, length: int) -> bool:
        raise MemoryError(f"could not commit {length} B for the video slab")

    monkeypatch.setattr(backing, "_madvise_populate", refused)
    slab = pipeline.allocate_slab(8, prefault=False)
    prefault = SlabPrefault(slab)
    with pytest.raises(MemoryError, match="could not commit"):
        prefault.wait_for(slab[:1].nbytes)
    with pytest.raises(MemoryError):
        prefault.wait()
