"""Arena plans, the budget table, and the fit check that runs before anything is allocated."""

from __future__ import annotations

import re

import pytest

import vram.arena
from vram import (ALIGNMENT_BYTES, GIB, MIB, Arena, ArenaDoesNotFit, ArenaPlan, InvalidPlan, Region,
                  format_budget_table, reference_plan, slab_region_bytes)


def _refuse_allocation(*args, **kwargs):
    raise AssertionError("the arena allocated memory before checking that the plan fits")


def test_too_big_plan_fails_before_allocating_with_the_whole_table(monkeypatch):
    """A plan over capacity raises ArenaDoesNotFit naming every region and the totals, and allocates nothing."""
    monkeypatch.setattr(vram.arena, "available_bytes", lambda device: 8 * GIB)
    monkeypatch.setattr(vram.arena, "HostBacking", _refuse_allocation)
    plan = reference_plan()
    with pytest.raises(ArenaDoesNotFit) as caught:
        Arena.create(plan, "cpu")
    message = str(caught.value)
    for name in plan.names:
        assert re.search(rf"^{name}\s", message, re.MULTILINE), f"region {name} missing from the table"
    for label, n_bytes in (("total", plan.total_bytes), ("headroom", plan.headroom_bytes),
                           ("required", plan.required_bytes), ("capacity", 8 * GIB),
                           ("free", 8 * GIB - plan.required_bytes)):
        assert re.search(rf"^{label}\s.*\s{n_bytes:,d}\s", message, re.MULTILINE), f"{label} row wrong"
    assert "DOES NOT FIT" in message
    assert caught.value.required_bytes == plan.required_bytes and caught.value.capacity_bytes == 8 * GIB


def test_real_host_capacity_rejects_an_impossible_plan():
    """Against the machine's real MemAvailable, a 1 PiB plan is refused (and never allocated)."""
    plan = ArenaPlan((Region("huge", 1 << 50), Region("small", MIB)))
    with pytest.raises(ArenaDoesNotFit, match="huge") as caught:
        Arena.create(plan, "cpu")
    assert "small" in caught.value.table and caught.value.device == "cpu"


def test_headroom_counts_towards_the_fit(monkeypatch):
    """An arena that fits alone but not with its headroom is refused."""
    monkeypatch.setattr(vram.arena, "available_bytes", lambda device: 10 * MIB)
    monkeypatch.setattr(vram.arena, "HostBacking", _refuse_allocation)
    with pytest.raises(ArenaDoesNotFit, match="headroom"):
        Arena.create(ArenaPlan((Region("a", 6 * MIB),), headroom_bytes=6 * MIB), "cpu")


def test_regions_are_aligned_disjoint_and_cover_the_total():
    """Region offsets are 256-byte aligned, in plan order, non-overlapping, and sum to the allocation size."""
    plan = ArenaPlan.from_budgets({"a": 1000, "b": 1, "c": 0, "d": 4096, "e": 77})
    spans = [(plan.offset_bytes(r.name), plan.offset_bytes(r.name) + r.budget_bytes) for r in plan.regions]
    assert all(start % ALIGNMENT_BYTES == 0 for start, _ in spans)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert plan.total_bytes == sum(-(-r.budget_bytes // 256) * 256 for r in plan.regions) == 1024 + 256 + 0 + 4096 + 256


@pytest.mark.parametrize("regions, fragment", [
    ((Region("a", 1), Region("a", 2)), "duplicate"),
    ((), "at least one"),
])
def test_malformed_plans_are_refused(regions, fragment):
    """Duplicate region names and empty plans raise InvalidPlan saying why."""
    with pytest.raises(InvalidPlan, match=fragment):
        ArenaPlan(regions)


@pytest.mark.parametrize("name, budget, fragment", [
    ("Flux", 1, "must match"), ("bad name", 1, "must match"), ("", 1, "must match"),
    ("ok", -1, ">= 0"), ("ok", 1.5, "must be an int"),
])
def test_malformed_regions_are_refused(name, budget, fragment):
    """Region names must be metric-label safe and budgets non-negative ints."""
    with pytest.raises(InvalidPlan, match=fragment):
        Region(name, budget)


def test_reference_plan_holds_two_45_second_slabs():
    """The reference plan's video_slabs region is exactly 2 x 1080x512x512x3 bytes; LivePortrait gets 3.5 GiB."""
    plan = reference_plan()
    assert plan.region("video_slabs").budget_bytes == 2 * 1080 * 512 * 512 * 3
    assert plan.region("liveportrait").budget_bytes == int(3.5 * GIB)
    assert slab_region_bytes(3, 10, 5, 5) == 3 * 768  # 750-byte slabs padded to 256 B


def test_budget_table_shares_and_free_are_computed_from_the_plan():
    """Each region's share is its budget over capacity, and free is capacity minus arena minus headroom."""
    plan = ArenaPlan((Region("alpha", 256 * MIB), Region("beta", 768 * MIB)), headroom_bytes=1024 * MIB)
    table = format_budget_table(plan, 4 * GIB, device="cuda:1")
    assert "cuda:1" in table.splitlines()[0]
    assert re.search(r"^alpha\s+256 MiB\s+268,435,456\s+6\.2%", table, re.MULTILINE)
    assert re.search(r"^beta\s+768 MiB\s+805,306,368\s+18\.8%", table, re.MULTILINE)
    assert re.search(r"^free\s+2\.00 GiB\s+2,147,483,648\s+50\.0%\s+fits", table, re.MULTILINE)
