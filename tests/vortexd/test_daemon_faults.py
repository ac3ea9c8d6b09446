"""Faults on the real daemon (issue P10, defects 3, 5, 6 and 9): a slot abandoned as late is never
published afterwards; a drain timeout during a long clip's check leaves the slots in flight
resumable and exits at once; checking a long clip holds up neither the other slots nor other
clients; a full disk at publish is retried once space is back, and ends the slot once when it
comes back too late."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.daemon import (DaemonProcess, StateWatcher, journal_rows, journal_state_counts, scrape_metrics,
                                  wait_for, write_config)
from tests.support.driving_clip import looped_clip

pytestmark = pytest.mark.slow

_FINAL = {"published", "late", "failed", "cancelled"}
_OUTCOMES = ("published", "published_late", "late", "failed")


def _recipe(slot_id: str, seconds: float = 2, **sections) -> dict:
    return {"slot_id": slot_id, "speech": {"text": f"This is {slot_id} on air."}, "output": {"duration_s": seconds},
            **sections}


def _outcome_counts(daemon: DaemonProcess) -> dict[str, float]:
    values = scrape_metrics(daemon)
    return {outcome: values[f'vortex_slots_total{{outcome="{outcome}"}}'] for outcome in _OUTCOMES}


def _long_clip(folder: Path, shared_dir: Path, loops: int) -> Path:
    """A real talking-head clip looped `loops` times (7.3 s each), inside the daemon's roots."""
    return looped_clip(shared_dir / "driving" / "d12.mp4", folder / f"long-{loops}.mp4", loops)


class _Submit(threading.Thread):
    """One client's submit on its own connection, in the background; keeps the answer and when it came."""

    def __init__(self, daemon: DaemonProcess, recipe: dict) -> None:
        super().__init__(daemon=True)
        self.daemon_process, self.recipe = daemon, recipe
        self.answer: dict | None = None
        self.error: BaseException | None = None
        self.answered_s: float | None = None

    def run(self) -> None:
        try:
            with self.daemon_process.client(timeout_s=120) as client:
                self.answer = client.request("submit", {"recipe": self.recipe})
        except Exception as exc:  # the daemon may stop while it checks: the client sees that
            self.error = exc
        self.answered_s = time.monotonic()


# ----- defect 3: late means never published ----------------------------------------------------

def _stop_once_encoding(daemon: DaemonProcess, slot_id: str, stopped: threading.Event) -> None:
    """SIGSTOP the daemon the moment the encoder starts writing `slot_id`'s video into its
    publishing folder (past every cancellation check before the encode); sets `stopped`."""
    until = time.monotonic() + 30
    while time.monotonic() < until:
        if any((daemon.folder / "out").glob(f".publishing-{slot_id}-*/video.mp4")):
            daemon.process.send_signal(signal.SIGSTOP)
            stopped.set()
            return
        time.sleep(0.002)


def test_a_slot_abandoned_as_late_while_it_encodes_is_never_published_afterwards(tmp_path: Path) -> None:
    """SIGSTOP the daemon as a slot starts encoding, SIGCONT after its deadline: the slot ends in
    one consistent outcome. Late (what a stop mid-encode gives): journal late, no `out/<id>/`,
    counted once as late. Or, had its rename committed before the stop: published, counted once
    as published_late. Never late in the journal with the video out, never counted twice."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=6.0, margin_s=1.0, verify=True))
    daemon.start()
    try:
        stopped = threading.Event()
        threading.Thread(target=_stop_once_encoding, args=(daemon, "late-1", stopped), daemon=True).start()
        receipt = daemon.request("submit", {"recipe": _recipe("late-1", seconds=4)})["result"]
        deadline_s = time.monotonic() + receipt["deadline_in_s"]
        assert stopped.wait(30), "late-1 never started encoding"
        assert time.monotonic() < deadline_s, "late-1 was already late when it started encoding"
        time.sleep(deadline_s - time.monotonic() + 1.0)
        daemon.process.send_signal(signal.SIGCONT)
        wait_for(lambda: journal_rows(tmp_path)["late-1"]["state"] in _FINAL, 30, "late-1 final")
        time.sleep(2.5)  # a withdrawn finish reports back; a tick mirrors the miss into the metrics
        counts = _outcome_counts(daemon)
        misses = scrape_metrics(daemon)["vortex_deadline_misses_total"]
    finally:
        daemon.process.send_signal(signal.SIGCONT)
        assert daemon.stop() == 0, daemon.log_tail()
    row = journal_rows(tmp_path)["late-1"]
    published = (tmp_path / "out" / "late-1").exists()
    if row["state"] == "late":
        assert not published, "a slot journaled late was published"
        assert counts == {"published": 0, "published_late": 0, "late": 1, "failed": 0}, counts
    else:
        assert row["state"] == "published" and (tmp_path / "out" / "late-1" / "manifest.json").is_file(), row
        assert counts == {"published": 0, "published_late": 1, "late": 0, "failed": 0}, counts
    assert misses == 1
    assert journal_state_counts(tmp_path, "published").get("late-1", 0) == (row["state"] == "published")


# ----- defects 5 and 6: a long clip's check holds nothing up -------------------------------------

def test_a_drain_timeout_while_a_long_clip_is_checked_leaves_slots_resumable_and_exits_at_once(
        tmp_path: Path, shared_dir: Path) -> None:
    """drain_timeout_s = 0.2; SIGTERM while a slot warps and another client's submit of a 59 s
    clip is being checked: the daemon exits within seconds (not after the check), the slots in
    flight are journaled where they were (not failed), and the restart publishes every slot
    accepted, each once."""
    clip = _long_clip(tmp_path, shared_dir, loops=8)
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=10.0, drain_timeout_s=0.2))
    daemon.start()
    watcher = StateWatcher(daemon).start()
    for k in range(2):
        assert daemon.request("submit", {"recipe": _recipe(f"text-{k}", seconds=5)})["ok"]
    submit = _Submit(daemon, _recipe("clip", motion={"driving": str(clip)}))
    submit.start()
    time.sleep(0.3)  # the clip's check is under way
    wait_for(lambda: "warping" in watcher.latest().values(), 30, "a slot warping")
    assert submit.is_alive(), "the clip's check ended before the SIGTERM: it proves nothing"
    daemon.process.send_signal(signal.SIGTERM)
    term_s = time.monotonic()
    assert daemon.process.wait(60) == 0, daemon.log_tail()
    exit_s = time.monotonic() - term_s
    rows = journal_rows(tmp_path)
    assert not [slot_id for slot_id, row in rows.items() if row["state"] == "failed"], (rows, exit_s)
    assert exit_s < 8.0, f"exit took {exit_s:.1f} s after SIGTERM"
    assert "drain_timeout" in daemon.log_tail(200_000)
    submit.join(10)
    # The clip's client is told to submit again (its recipe was never journaled), not left hanging.
    assert submit.answer is not None and submit.answer["error"]["code"] == "draining", (submit.answer, submit.error)

    restarted = DaemonProcess(tmp_path, daemon.config)
    restarted.start()
    try:
        wait_for(lambda: all(row["state"] in _FINAL for row in journal_rows(tmp_path).values()), 90,
                 "every accepted slot final after the restart")
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    assert all(row["state"] == "published" for row in journal_rows(tmp_path).values()), journal_rows(tmp_path)
    accepted = sorted(journal_rows(tmp_path))
    assert accepted == ["text-0", "text-1"]
    assert journal_state_counts(tmp_path, "published") == {slot_id: 1 for slot_id in accepted}


def test_checking_a_long_clip_holds_up_neither_accepted_slots_nor_other_clients(
        tmp_path: Path, shared_dir: Path) -> None:
    """While one client's 59 s clip is checked at submit: slots accepted before it (one with an
    image, whose end makes the spool due for a sweep) keep advancing and publish before their
    deadlines, before the check ends; another client's text-only submit is answered in well
    under a second."""
    clip = _long_clip(tmp_path, shared_dir, loops=8)
    shutil.copy(shared_dir / "faces" / "s9.jpg", tmp_path / "face.jpg")
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=8.0, margin_s=1.0))
    daemon.start()
    try:
        watcher = StateWatcher(daemon).start()
        assert daemon.request("submit", {"recipe": _recipe("image-0", actor={"image": str(tmp_path / "face.jpg")})})["ok"]
        assert daemon.request("submit", {"recipe": _recipe("text-1")})["ok"]
        clip_submit = _Submit(daemon, _recipe("clip", motion={"driving": str(clip)}))
        clip_submit.start()
        time.sleep(0.3)  # the check is under way
        started = time.monotonic()
        answer = daemon.request("submit", {"recipe": _recipe("text-2")})
        answered_in_s = time.monotonic() - started
        assert answer["ok"], answer
        wait_for(lambda: all(watcher.when(f, "published") for f in ("image-0", "text-1", "text-2")), 60,
                 "the text and image slots published")
        still_checking = clip_submit.is_alive()
        slack = {slot_id: daemon.request("status", {"slot_id": slot_id})["result"]["result"]["deadline_slack_s"]
                 for slot_id in ("image-0", "text-1", "text-2")}
        clip_submit.join(120)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert answered_in_s < 1.0, f"a text-only submit waited {answered_in_s:.2f} s behind the clip's check"
    assert still_checking, "the clip's check ended before the other slots published: it proves nothing"
    assert all(s > 0 for s in slack.values()), slack
    assert clip_submit.answer is not None and clip_submit.answer["ok"], (clip_submit.answer, clip_submit.error)


# ----- defect 9: a full disk is a transient fault ---------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """`tmp_path/out` on a tmpfs of its own (8 MiB), so the daemon's publishes can fill it; skips
    where mounting is refused (not root, no CAP_SYS_ADMIN, no mount binary)."""
    out = tmp_path / "out"
    out.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(out)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs for the output folder: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the output folder: {mounted.stderr.strip()}")
    yield out
    subprocess.run(["umount", "-l", str(out)], capture_output=True, timeout=30)


def _fill(folder: Path, leave_bytes: int = 32 * 1024) -> Path:
    """Fill `folder`'s file system with one file until `leave_bytes` remain (a slot needs ~360 KB)."""
    stats = os.statvfs(folder)
    filler = folder / ".filler"
    with open(filler, "wb") as handle:
        try:
            handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave_bytes))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def _error_of(folder: Path, slot_id: str) -> str:
    return journal_rows(folder).get(slot_id, {}).get("error") or ""


def test_a_full_disk_at_publish_is_retried_once_space_is_freed_and_survives_a_restart(
        tmp_path: Path, small_disk: Path) -> None:
    """The output disk is full when a slot publishes: it is journaled for another try (not
    failed), and publishes once space is freed. Full again for the next slot: SIGTERM while it
    waits for space leaves it journaled; space freed, the restart publishes it. Each slot is
    published exactly once, nothing half-published is left, nothing is counted failed."""
    config = write_config(tmp_path, cadence_s=20.0, margin_s=1.0, verify=False, drain_timeout_s=1.0)
    daemon = DaemonProcess(tmp_path, config)
    daemon.start()
    filler = _fill(small_disk)
    assert daemon.request("submit", {"recipe": _recipe("disk-0")})["ok"]
    wait_for(lambda: "No space left" in _error_of(tmp_path, "disk-0"), 30, "disk-0's publish refused for space")
    assert journal_rows(tmp_path)["disk-0"]["state"] != "failed"
    filler.unlink()
    wait_for(lambda: journal_rows(tmp_path)["disk-0"]["state"] in _FINAL, 30, "disk-0 final")
    assert journal_rows(tmp_path)["disk-0"]["state"] == "published", journal_rows(tmp_path)
    counts = _outcome_counts(daemon)
    assert counts["published"] == 1 and counts["failed"] == 0, counts

    filler = _fill(small_disk)
    assert daemon.request("submit", {"recipe": _recipe("disk-1")})["ok"]
    wait_for(lambda: "No space left" in _error_of(tmp_path, "disk-1"), 30, "disk-1's publish refused for space")
    assert daemon.stop() == 0, daemon.log_tail()
    assert journal_rows(tmp_path)["disk-1"]["state"] not in _FINAL, journal_rows(tmp_path)
    filler.unlink()
    restarted = DaemonProcess(tmp_path, config)
    restarted.start()
    try:
        wait_for(lambda: journal_rows(tmp_path)["disk-1"]["state"] in _FINAL, 30, "disk-1 final after the restart")
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    assert {k: r["state"] for k, r in journal_rows(tmp_path).items()} == {"disk-0": "published", "disk-1": "published"}
    assert journal_state_counts(tmp_path, "published") == {"disk-0": 1, "disk-1": 1}
    # No temp folder left (the daemon's own channel folder aside).
    assert sorted(p.name for p in small_disk.iterdir() if p.name != "channel") == ["disk-0", "disk-1"]


def test_a_disk_freed_only_after_the_deadline_ends_the_slot_once_and_never_publishes_it(
        tmp_path: Path, small_disk: Path) -> None:
    """The disk stays full past the slot's deadline: the slot ends (late, or failed once its
    tries ran out) instead of waiting for space forever, is counted once and as one deadline
    miss, and freeing space afterwards publishes nothing; the journal keeps the disk's error."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=3.0, margin_s=1.0, verify=False))
    daemon.start()
    try:
        filler = _fill(small_disk)
        assert daemon.request("submit", {"recipe": _recipe("full-0")})["ok"]
        wait_for(lambda: journal_rows(tmp_path)["full-0"]["state"] in _FINAL, 30, "full-0 final")
        filler.unlink()
        time.sleep(3.0)  # time for a (wrong) retry to publish it, and for a tick to count the miss
        counts = _outcome_counts(daemon)
        misses = scrape_metrics(daemon)["vortex_deadline_misses_total"]
        status = daemon.request("status", {"slot_id": "full-0"})["result"]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    row = journal_rows(tmp_path)["full-0"]
    assert row["state"] in ("late", "failed") and status["state"] == row["state"], (row, status)
    assert counts == {"published": 0, "published_late": 0, "late": row["state"] == "late",
                      "failed": row["state"] == "failed"}, counts
    assert misses == 1
    # Nothing of the slot is left on the full disk: no folder, no publishing or live copy.
    assert [p.name for p in small_disk.rglob("*") if "full-0" in p.name] == []
    assert "No space left" in (row["error"] or "") or row["state"] == "late", row
