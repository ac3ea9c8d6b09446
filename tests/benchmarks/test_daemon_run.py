"""The GPU kit's daemon run with the test networks, on the CPU (a rehearsal) and on CUDA (gpu-marked):
the same script starts a real vortexd, feeds it over the socket with vortexctl, and writes the
figures P13 records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "daemon_run.py"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda:0", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_the_daemon_run_publishes_its_slots_and_writes_the_figures(tmp_path: Path, device: str) -> None:
    """One slot of each phase (2 s of video, a 60 s cadence the CPU holds): both publish, no deadline
    is missed, each warp's seconds and the regions' peaks within their budgets are written, and the
    daemon became READY twice (cold, then on the warm cache)."""
    out = tmp_path / "daemon.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", device, "--tiny", "--slots", "1", "--alone", "1",
                           "--duration", "2", "--cadence", "60", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert (figures["slots"], figures["published"], figures["missed"]) == (2, 2, 0)
    assert [row["phase"] for row in figures["per_slot"]] == ["overlap", "alone"]
    assert all(row["state"] == "published" and row["warp_s"] > 0 for row in figures["per_slot"])
    assert figures["warp_s_without_overlap"] == figures["per_slot"][1]["warp_s"]
    assert figures["ready_cold_s"] > 0 and figures["ready_warm_s"] > 0 and figures["exit_status"] == 0
    warp, clip = figures["regions"]["liveportrait"], figures["regions"]["clip"]
    assert warp["within_budget"] and clip["within_budget"] and warp["peak_mib"] == warp["metrics_peak_mib"]
    assert (tmp_path / "daemon.log").stat().st_size > 0
