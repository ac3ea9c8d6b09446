"""SIGTERM drains on the real daemon (issue P10: the drain test, defect 4): the daemon exits only
after every slot in flight is published, stage jobs still waiting in a worker's mailbox included,
and a restart on the same state folder publishes the rest, each slot exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.daemon import (DaemonProcess, StateWatcher, journal_rows, journal_state_counts, wait_for,
                                  write_config)

pytestmark = pytest.mark.slow

_STARTED = {"preparing", "prepared", "warping", "warped", "finishing"}
"""States of a slot a drain must see through to publication."""


def _recipe(i: int) -> dict:
    return {"slot_id": f"slot-{i}", "speech": {"text": f"Number {i}, standing by."}, "motion": {"seed": i},
            "output": {"duration_s": 2}}


def _restart_publishes_everything(folder: Path, config: Path, slot_ids: list[str]) -> None:
    """Start the daemon again on `folder`: every slot in `slot_ids` ends published, each once."""
    restarted = DaemonProcess(folder, config)
    restarted.start()
    try:
        wait_for(lambda: all(r["state"] in ("published", "late", "failed") for r in journal_rows(folder).values()),
                 90, "every accepted slot final after the restart")
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    assert all(r["state"] == "published" for r in journal_rows(folder).values()), journal_rows(folder)
    # The output folder holds the slots, each once (beside the daemon's own channel folder).
    assert sorted(p.name for p in (folder / "out").iterdir() if p.name != "channel") == sorted(slot_ids)
    assert journal_state_counts(folder, "published") == {slot_id: 1 for slot_id in slot_ids}
    assert all((folder / "out" / slot_id / "manifest.json").is_file() for slot_id in slot_ids)


def test_sigterm_with_stage_work_queued_publishes_every_slot_in_flight_then_the_rest_after_a_restart(
        tmp_path: Path) -> None:
    """Six short slots: SIGTERM while stage work is queued behind a running stage (a job in a
    worker's mailbox, e.g. a finish behind another slot's finish, or a prepared slot waiting for
    the warp lane). The daemon exits 0 only after every slot
    that had started is published (no drain_timeout), nothing is failed, and the restart
    publishes the slots that had not started: six published, each exactly once."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=8.0, verify=True, drain_timeout_s=30.0))
    daemon.start()
    slot_ids = [f"slot-{i}" for i in range(6)]
    for i in range(6):
        assert daemon.request("submit", {"recipe": _recipe(i)})["ok"]

    def queued_work() -> bool:
        health = daemon.request("health")["result"]
        lanes = health.get("workers") or health.get("actors")  # the stage lanes (named actors before P10)
        if any(lane["queued"] > 0 for lane in lanes.values()):
            return True  # a stage job waits in a worker's mailbox
        # Or a slot prepared and waiting for the warp lane while another slot warps.
        states = [row["state"] for row in journal_rows(tmp_path).values()]
        return "warping" in states and "prepared" in states

    wait_for(queued_work, 60, "stage work queued behind a running stage")
    daemon.process.send_signal(signal.SIGTERM)
    at_term = {slot_id: row["state"] for slot_id, row in journal_rows(tmp_path).items()}
    assert daemon.process.wait(60) == 0, daemon.log_tail()

    after = journal_rows(tmp_path)
    started = [slot_id for slot_id, state in at_term.items() if state in _STARTED]
    assert started, at_term
    assert all(after[slot_id]["state"] == "published" for slot_id in started), (at_term, after)
    assert not any(row["state"] == "failed" for row in after.values()), after
    assert "drain_timeout" not in daemon.log_tail(200_000)
    assert "shutdown_leftovers" not in daemon.log_tail(200_000)  # every task stopped when asked
    _restart_publishes_everything(tmp_path, daemon.config, slot_ids)


def test_sigterm_at_a_warped_event_waits_for_that_slot_and_any_slot_warping(tmp_path: Path) -> None:
    """SIGTERM the moment a slot is reported `warped` (its finish not even queued yet): the daemon
    does not exit before that slot, and every slot that had started by then, is published (the
    drain timeout is far away, so it must not be logged); the restart publishes the rest once."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=8.0, verify=True, drain_timeout_s=30.0))
    daemon.start()
    at_term: dict[str, str] = {}

    def on_state(slot_id: str, state: str) -> None:
        if slot_id == "slot-1" and state == "warped" and not at_term:
            daemon.process.send_signal(signal.SIGTERM)
            at_term.update(watcher.latest())

    watcher = StateWatcher(daemon, on_state).start()
    slot_ids = [f"slot-{i}" for i in range(4)]
    # slot-0 first and alone: when slot-1 warps, no finish runs, so nothing but the drain itself
    # keeps the daemon alive between slot-1's `warped` and its finish starting.
    assert daemon.request("submit", {"recipe": _recipe(0)})["ok"]
    wait_for(lambda: watcher.latest().get("slot-0") == "published", 60, "slot-0 published")
    for i in range(1, 4):
        assert daemon.request("submit", {"recipe": _recipe(i)})["ok"]
    wait_for(lambda: bool(at_term), 60, "slot-1 warped")
    term_s = time.monotonic()
    assert daemon.process.wait(60) == 0, daemon.log_tail()
    exit_s = time.monotonic() - term_s

    after = journal_rows(tmp_path)
    started = [slot_id for slot_id, state in at_term.items() if state in _STARTED]
    assert "slot-1" in started, at_term
    assert all(after[slot_id]["state"] == "published" for slot_id in started), (at_term, after, exit_s)
    assert "drain_timeout" not in daemon.log_tail(200_000)
    assert "shutdown_leftovers" not in daemon.log_tail(200_000)  # every task stopped when asked
    _restart_publishes_everything(tmp_path, daemon.config, slot_ids)
