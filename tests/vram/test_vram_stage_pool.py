"""Stage pools on the host: a model stage's PyTorch memory is counted in its region and capped at the budget."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vram import (KIB, MIB, Arena, ArenaPlan, InvalidView, StageMemoryExceeded,  # noqa: E402
                  format_budget_table, make_stage_pool)


@pytest.fixture
def arena() -> Arena:
    """One pool region for a model stage beside a view region for slabs."""
    plan = ArenaPlan.from_budgets({"model": 4 * MIB, "slabs": 64 * KIB}, pools={"model"})
    with Arena.create(plan, "cpu") as made:
        yield made


def test_tensors_made_inside_are_counted_until_freed(arena):
    """What the stage allocates inside `with pool:` is its region's use, and leaves it when freed."""
    pool = arena.stage_pool("model")
    assert arena.stage_pool("model") is pool and arena.usage()["model"].used_bytes == 0
    with pool:
        kept = torch.ones(1000, dtype=torch.float32)
        alias = kept.view(10, 100)  # a view is the same storage: counted once
        scratch = torch.zeros(500, dtype=torch.float64)
    assert arena.usage()["model"].used_bytes == 4000 + 4000
    del scratch
    assert arena.usage()["model"].used_bytes == 4000
    del kept, alias
    assert arena.usage()["model"].used_bytes == 0


def test_only_the_entering_thread_is_counted(arena):
    """Routing is per thread: another thread's tensors, made while the stage is inside, are not the stage's."""
    pool = arena.stage_pool("model")
    others: list = []
    with pool:
        thread = threading.Thread(target=lambda: others.append(torch.ones(10_000)))
        thread.start()
        thread.join()
        mine = torch.ones(100)
    assert pool.used_bytes() == mine.nbytes


def test_reentering_in_the_same_thread_counts_once(arena):
    """A stage call inside another (prepare inside render) neither double-counts nor stops counting early."""
    pool = arena.stage_pool("model")
    with pool:
        with pool:
            inner = torch.ones(256)
        outer = torch.ones(256)
    assert pool.used_bytes() == inner.nbytes + outer.nbytes


def test_crossing_the_budget_fails_that_call_and_frees_its_memory():
    """The allocation that crosses the budget raises with the figures; the stage keeps what it held before."""
    pool = make_stage_pool("warp", 64 * KIB)
    with pool:
        resident = torch.ones(4 * KIB, dtype=torch.float32)  # 16 KiB
    with pytest.raises(StageMemoryExceeded) as caught, pool:
        torch.ones(16 * KIB, dtype=torch.float32).add(1)  # 64 KiB more
    error = caught.value
    assert error.region == "warp" and error.budget_bytes == 64 * KIB and error.used_bytes > 64 * KIB
    assert "'warp'" in str(error) and "64.0 KiB" in str(error)
    assert pool.used_bytes() == resident.nbytes
    with pool:  # and the stage serves the next call
        assert float(torch.ones(KIB).sum()) == KIB


def test_peak_includes_what_is_resident_and_the_steps_transients():
    """measure_peak: resident bytes plus the largest working set the step held at once."""
    pool = make_stage_pool("warp", 8 * MIB)
    with pool:
        weights = torch.ones(1000, dtype=torch.float32)

    def step() -> None:
        a = torch.ones(2000, dtype=torch.float32)
        b = a * 2  # a and b live together: 16 000 B of transients
        del a, b

    assert pool.measure_peak(step) == weights.nbytes + 16_000
    assert pool.used_bytes() == weights.nbytes and pool.peak_bytes() == weights.nbytes + 16_000


def test_adopted_weights_are_charged_once_and_released_with_the_model():
    """Weights made outside any operator (read from disk) are charged by adopt, each storage once."""
    pool = make_stage_pool("clip", MIB)
    model = torch.nn.Linear(64, 32)
    pool.adopt(model.state_dict().values())
    pool.adopt(list(model.parameters()))
    assert pool.used_bytes() == (64 * 32 + 32) * 4
    pool.check("load")
    del model
    assert pool.used_bytes() == 0


def test_check_names_the_region_and_the_phase():
    """check() refuses a region that holds more than its budget (e.g. weights that do not fit)."""
    pool = make_stage_pool("flux", KIB)
    weights = torch.from_numpy(np.ones(1024, dtype=np.float32))
    pool.adopt([weights])
    with pytest.raises(StageMemoryExceeded, match=r"'flux' is over its budget during load: 4.00 KiB"):
        pool.check("load")


def test_pool_and_view_regions_are_used_their_own_way(arena):
    """Views are carved from view regions only; stage pools exist for pool regions only."""
    with pytest.raises(InvalidView, match="'model' is a pool region"):
        arena.view("model", 16, np.uint8, "x")
    with pytest.raises(InvalidView, match="'slabs' is a views region"):
        arena.stage_pool("slabs")


def test_pool_regions_count_against_the_device_but_not_the_allocation():
    """A pool region's budget is checked with the plan, but the one allocation holds only the view regions."""
    plan = ArenaPlan.from_budgets({"model": 3 * MIB, "slabs": MIB}, headroom_bytes=MIB, pools={"model"})
    assert plan.total_bytes == MIB and plan.pool_bytes == 3 * MIB and plan.required_bytes == 5 * MIB
    table = format_budget_table(plan, 4 * MIB)
    assert "stage pool" in table and "DOES NOT FIT: short by 1.00 MiB" in table
