"""The arena: one allocation, typed views at stable addresses, budgets, release and usage accounting."""

from __future__ import annotations

import mmap
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vram import (KIB, MIB, Arena, ArenaClosed, ArenaPlan, InvalidView, Region, RegionBudgetExceeded, UnknownRegion,
                  ViewConflict)


@pytest.fixture
def arena() -> Arena:
    """A small host arena with three regions of awkward (unaligned) sizes."""
    plan = ArenaPlan((Region("weights", 1 * MIB + 13), Region("scratch", 64 * KIB), Region("tiny", 100)))
    with Arena.create(plan, "cpu") as made:
        yield made


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _byte_span(arena: Arena, view: np.ndarray) -> tuple[int, int]:
    start = arena.address_of(view) - arena.base_address
    return start, start + view.nbytes


def test_every_view_lives_in_the_one_allocation(arena):
    """All views, from every region and of any dtype, share the arena's single page-aligned buffer."""
    views = [arena.view("weights", (256, 256), np.float16, "w"), arena.view("scratch", 1000, np.int32, "s"),
             arena.view("tiny", (3, 5), np.uint8, "t")]
    assert arena.base_address % mmap.PAGESIZE == 0
    assert arena.buffer.nbytes == arena.plan.total_bytes
    for view in views:
        assert np.shares_memory(view, arena.buffer)
        assert _root(view) is _root(arena.buffer)
        start, end = _byte_span(arena, view)
        assert 0 <= start and end <= arena.total_bytes


def test_carving_a_view_allocates_no_memory(arena):
    """Carving a 1 MiB view costs only Python bookkeeping, never a new buffer."""
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        view = arena.view("weights", (MIB // 4,), np.float32, "big")
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert view.nbytes == MIB
    assert grown < 16 * KIB


def test_same_name_returns_the_same_address(arena):
    """Asking again for a named view returns the same memory (stable address for CUDA graphs)."""
    first = arena.view("weights", (64, 3), np.float32, "kv")
    first[:] = 7.5
    again = arena.view("weights", (np.int64(64), np.int32(3)), "float32", "kv")
    assert arena.address_of(again) == arena.address_of(first)
    assert np.all(again == 7.5)
    assert arena.usage()["weights"].used_bytes == first.nbytes


def test_same_name_with_another_layout_is_refused(arena):
    """Re-requesting a name with a different shape or dtype raises ViewConflict instead of aliasing."""
    arena.view("scratch", (16,), np.float32, "buf")
    with pytest.raises(ViewConflict, match="buf"):
        arena.view("scratch", (32,), np.float32, "buf")
    with pytest.raises(ViewConflict, match="float64"):
        arena.view("scratch", (16,), np.float64, "buf")


def test_views_never_overlap_and_stay_inside_their_region(arena):
    """Many views of random sizes and dtypes are aligned, disjoint, inside their region, and keep their data."""
    rng = np.random.default_rng(3)
    dtypes = [np.uint8, np.float16, np.float32, np.int64, np.complex128]
    carved = []
    for region, limit in (("weights", 40_000), ("scratch", 3_000)):
        for i in range(200):
            dtype = dtypes[rng.integers(len(dtypes))]
            shape = tuple(int(n) for n in rng.integers(0, 12, size=rng.integers(1, 4)))
            if np.prod(shape) * np.dtype(dtype).itemsize > limit:
                continue
            try:
                view = arena.view(region, shape, dtype, f"v{i}")
            except RegionBudgetExceeded:
                break
            carved.append((region, view))
    spans = sorted((*_byte_span(arena, v), region) for region, v in carved if v.nbytes)
    assert len(spans) > 100
    for start, end, region in spans:
        region_start = arena.plan.offset_bytes(region)
        assert start % 256 == 0
        assert region_start <= start and end <= region_start + arena.plan.region(region).budget_bytes
    assert all(end <= next_start for (_, end, _), (next_start, _, _) in zip(spans, spans[1:]))
    for k, (_, view) in enumerate(carved):
        view.reshape(-1).view(np.uint8)[:] = k % 251
    assert all(np.all(view.reshape(-1).view(np.uint8) == k % 251) for k, (_, view) in enumerate(carved))


def test_budget_exceeded_names_region_request_budget_and_use(arena):
    """Carving past a budget raises RegionBudgetExceeded with region, request, budget and use, and changes nothing."""
    arena.view("tiny", (60,), np.uint8, "a")
    with pytest.raises(RegionBudgetExceeded) as caught:
        arena.view("tiny", (41,), np.uint8, "b")
    error = caught.value
    assert (error.region, error.view_name, error.requested_bytes, error.budget_bytes, error.used_bytes) == (
        "tiny", "b", 41, 100, 60)
    assert "'tiny'" in str(error) and "41 B" in str(error) and "100 B" in str(error) and "used 60 B" in str(error)
    assert arena.usage()["tiny"].used_bytes == 60
    assert arena.view("weights", (MIB + 13,), np.uint8, "exactly_full").nbytes == MIB + 13


def test_usage_counts_views_with_alignment_and_release_resets(arena):
    """usage() reports budget and used bytes per region; release() empties a region and re-carving reuses its start."""
    first = arena.view("scratch", (10,), np.uint8, "a")
    arena.view("scratch", (4, 4), np.float64, "b")
    assert arena.usage() == {"weights": (MIB + 13, 0), "scratch": (64 * KIB, 256 + 128), "tiny": (100, 0)}
    assert [info.name for info in arena.views("scratch")] == ["a", "b"]
    arena.release("scratch")
    assert arena.usage()["scratch"] == (64 * KIB, 0) and arena.views("scratch") == ()
    fresh = arena.view("scratch", (3,), np.float32, "c")
    assert arena.address_of(fresh) == arena.address_of(first)


def test_unknown_regions_and_bad_views_are_refused(arena):
    """An unknown region lists the plan's regions; bad shapes, dtypes and names raise InvalidView."""
    with pytest.raises(UnknownRegion, match="weights, scratch, tiny"):
        arena.view("flux", (1,), np.uint8, "x")
    with pytest.raises(UnknownRegion):
        arena.release("flux")
    with pytest.raises(InvalidView, match="non-negative"):
        arena.view("weights", (4, -1), np.uint8, "neg")
    with pytest.raises(InvalidView, match="non-negative"):
        arena.view("weights", (2.5,), np.uint8, "float_dim")
    with pytest.raises(InvalidView, match="non-negative"):
        arena.view("weights", (True, 2), np.uint8, "bool_dim")
    with pytest.raises(InvalidView, match="no host"):
        arena.view("weights", (4,), "not-a-dtype", "bad")
    with pytest.raises(InvalidView, match="name"):
        arena.view("weights", (4,), np.uint8, "")


def test_concurrent_carving_from_threads_never_overlaps(arena):
    """Two threads carving at once get disjoint views (the bump pointer is locked)."""
    results: list[list[np.ndarray]] = [[], []]

    def carve(k: int) -> None:
        for i in range(300):
            results[k].append(arena.view("weights", (100,), np.uint8, f"t{k}_{i}"))

    threads = [threading.Thread(target=carve, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts = sorted(_byte_span(arena, v)[0] for vs in results for v in vs)
    assert len(set(starts)) == 600 and all(b - a >= 256 for a, b in zip(starts, starts[1:]))


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * mmap.PAGESIZE


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to read the resident set")
def test_prefault_commits_the_memory_at_creation():
    """With prefault (the default) the arena is resident right after creation; without it pages stay lazy."""
    plan = ArenaPlan((Region("a", 64 * MIB),))
    before = _rss_bytes()
    with Arena.create(plan, "cpu", prefault=False) as lazy:
        lazy_growth = _rss_bytes() - before
        before = _rss_bytes()
        with Arena.create(plan, "cpu") as committed:
            committed_growth = _rss_bytes() - before
            assert not committed.buffer.any() and not lazy.buffer[::4096].any()
    assert lazy_growth < 8 * MIB
    assert committed_growth >= 60 * MIB


def test_closed_arena_hands_out_nothing_but_old_views_stay_valid():
    """After close(), new views raise ArenaClosed while views already carved keep working."""
    made = Arena.create(ArenaPlan((Region("a", KIB),)), "cpu")
    view = made.view("a", (8,), np.int16, "kept")
    made.close()
    view[:] = 3
    assert view.sum() == 24
    with pytest.raises(ArenaClosed):
        made.view("a", (8,), np.int16, "new")
