"""The real daemon under a connection flood (issue P10, defect 1): an operator's `health` is
answered every time, and another client's submit still goes through."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, write_config

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_health_flood.py"


def test_health_and_submit_are_answered_while_a_client_floods_the_daemon(tmp_path_factory) -> None:
    """A process opening 40 connections a second and holding them silent for 4 s: 12 of 12 health
    probes (0.25 s apart) are answered healthy within half a second, a submit is acknowledged,
    and the flood's extra connections are told `busy` naming max_connections_per_peer."""
    folder = tmp_path_factory.mktemp("vortexd-flood")
    daemon = DaemonProcess(folder, write_config(folder))
    daemon.start()
    try:
        flood = subprocess.Popen([sys.executable, str(BENCH), "--flood-only", str(daemon.socket_path),
                                  "--rate", "40", "--seconds", "4"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.75)  # the flood already holds its share when the first probe goes out
        latencies, answers, submit = [], [], {}
        for i in range(12):
            sent = time.perf_counter()
            answers.append(daemon.request("health"))
            latencies.append(time.perf_counter() - sent)
            if i == 5:
                submit = daemon.request("submit", {"recipe": {
                    "slot_id": "during-flood", "speech": {"text": "Hello."}, "output": {"duration_s": 2}}})
            time.sleep(0.25)
        out, _ = flood.communicate(timeout=30)
        daemon.request("cancel", {"slot_id": "during-flood"})
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert [answer["ok"] and answer["result"]["healthy"] for answer in answers] == [True] * 12, answers
    assert max(latencies) < 0.5, latencies
    assert submit["ok"], submit
    outcome = json.loads(out)["outcome"]
    assert outcome["opened"] >= 120 and outcome["busy:max_connections_per_peer"] >= 90, outcome
