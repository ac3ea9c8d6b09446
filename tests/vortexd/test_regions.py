"""Arena regions are reserved only for the model stages a node runs."""

from __future__ import annotations

import json

import pytest

from vortexd.regions import model_region_budgets
from vortexd.settings import load_settings
from tests.support.daemon import DaemonProcess, write_config
from vram import MIB

BUDGETS = {"liveportrait": 3584, "flux": 10240, "kokoro": 512, "clip": 1280}


@pytest.mark.parametrize(("overrides", "reserved"), [
    ({}, set()),
    ({"warp_backend": "liveportrait"}, {"liveportrait"}),
    ({"image_backend": "flux", "verify_backend": "clip"}, {"flux", "clip"}),
    ({"verify_backend": "clip", "verify": False}, set()),
], ids=["embedded node", "liveportrait", "flux and clip", "clip but no verify"])
def test_only_the_regions_of_configured_stages_are_reserved(overrides: dict, reserved: set) -> None:
    """Budgets of stages the node does not run are left out (and named); Kokoro's never (CPU)."""
    settings = load_settings(None, arena_budgets_mib=BUDGETS, **overrides)
    budgets, unused = model_region_budgets(settings)
    assert set(budgets) == reserved and set(unused) == set(BUDGETS) - reserved
    assert all(budgets[name] == BUDGETS[name] * MIB for name in reserved)


def test_a_configured_stage_without_a_budget_gets_the_reference_one() -> None:
    """LivePortrait configured, no budget named for it: its region gets the reference plan's 3.5 GiB."""
    budgets, unused = model_region_budgets(load_settings(None, warp_backend="liveportrait"))
    assert budgets == {"liveportrait": 3584 * MIB} and unused == []


@pytest.mark.slow
def test_a_mesh_node_reserves_only_its_video_slabs(tmp_path, monkeypatch) -> None:
    """A real daemon with every model budget configured but the embedded backends: its arena
    (status) holds the video slabs alone."""
    monkeypatch.setenv("VORTEX_ARENA_BUDGETS_MIB", json.dumps(BUDGETS))
    daemon = DaemonProcess(tmp_path, write_config(tmp_path))
    daemon.start()
    try:
        arena = daemon.request("status")["result"]["arena"]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert set(arena) == {"video_slabs"}
