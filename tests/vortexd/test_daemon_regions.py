"""A real daemon whose warp stage (LivePortrait, tiny random weights, CPU) lives in its arena region."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("torch")

from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints  # noqa: E402
from tests.support.daemon import DaemonProcess, wait_for, write_config  # noqa: E402
from vram import MIB  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LivePortrait's five official files at the TINY sizes (about 1 MB of random weights)."""
    root = tmp_path_factory.mktemp("liveportrait")
    write_random_checkpoints(root, TINY, seed=3)
    return root


def _config(folder: Path, weights: Path, budget_mib: int) -> Path:
    return write_config(folder, warp_backend="liveportrait", liveportrait_weights_dir=weights,
                        liveportrait_model_params=dataclasses.asdict(TINY),
                        arena_budgets_mib={"liveportrait": budget_mib})


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rpartition(" ")[2])
    raise AssertionError(f"{name} not in /metrics")


def test_the_warp_stage_lives_in_its_region_and_says_how_much(tmp_path: Path, tiny_weights: Path) -> None:
    """Status, /metrics and vortexctl show the region's real use and warm-up peak, within the budget;
    a slot publishes and leaves the region as it found it."""
    daemon = DaemonProcess(tmp_path, _config(tmp_path, tiny_weights, budget_mib=64))
    daemon.start()
    try:
        before = daemon.request("status")["result"]["arena"]["liveportrait"]
        recipe = {"slot_id": "in-region", "speech": {"text": "Hello from the region."}, "output": {"duration_s": 2}}
        assert daemon.request("submit", {"recipe": recipe})["ok"]
        wait_for(lambda: daemon.request("status", {"slot_id": "in-region"})["result"]["state"] == "published",
                 60, "the slot published")
        status = daemon.request("status")["result"]
        after = status["arena"]["liveportrait"]
        port = status["metrics_port"]
        used_name = 'vortex_arena_bytes{kind="used",region="liveportrait"}'
        # The gauges are refreshed once a second: give the one after the slot time to land.
        wait_for(lambda: _metric(port, used_name) == after["used_bytes"], 5, "the region's use in /metrics")
        used_metric = _metric(port, used_name)
        peak_metric = _metric(port, 'vortex_arena_bytes{kind="peak",region="liveportrait"}')
        human = subprocess.run([sys.executable, "-m", "vortexd.ctl", "status", "--socket", str(daemon.socket_path)],
                               capture_output=True, text=True, timeout=30)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert before["kind"] == "pool" and before["budget_bytes"] == 64 * MIB
    # Weights, the engine's buffers and the warm-up actor stay; a step's activations come and go.
    assert 1 * MIB < before["used_bytes"] < before["peak_bytes"] <= 64 * MIB
    assert after["used_bytes"] == before["used_bytes"] and after["peak_bytes"] <= 64 * MIB
    assert used_metric == after["used_bytes"] and peak_metric == after["peak_bytes"]
    row = next(line for line in human.stdout.splitlines() if line.startswith("liveportrait"))
    assert row.split()[1:4] == ["pool", "64.0", "MiB"], human.stdout


def test_a_stage_that_cannot_fit_its_region_refuses_to_start_with_the_tables(tmp_path: Path,
                                                                               tiny_weights: Path) -> None:
    """A region too small for one frame's step: the daemon exits before READY, naming the setting, with
    what the stage needed and what the device has."""
    daemon = DaemonProcess(tmp_path, _config(tmp_path, tiny_weights, budget_mib=16))
    with pytest.raises(RuntimeError, match="exited with 1"):
        daemon.start()
    log = (tmp_path / "daemon.log").read_text()
    failure = next(json.loads(line) for line in log.splitlines() if '"startup_failed"' in line)["error"]
    assert "arena_budgets_mib.liveportrait" in failure and "during a 1-frame chunk step" in failure
    assert "stage region" in failure and "OVER BUDGET" in failure  # the stage table
    assert "capacity" in failure and "video_slabs" in failure  # the arena against the device
