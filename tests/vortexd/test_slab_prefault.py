"""A one-shot render's slab is committed beside the prepare stage, and whole before the warp."""

from __future__ import annotations

import numpy as np

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
