"""The slot journal: durable acceptance, idempotent resubmits, terminal states, resume after kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from vortexd.journal import (
    SCHEMA_VERSION,
    DuplicateSlot,
    Journal,
    JournalError,
    SlotFinished,
    SlotNotFound,
)

REPO = Path(__file__).resolve().parents[2]


def _recipe(slot_id: str, text: str = "Hello there.") -> tuple[str, str]:
    recipe_json = json.dumps({"slot_id": slot_id, "speech": {"text": text}}, sort_keys=True)
    return recipe_json, hashlib.sha256(recipe_json.encode()).hexdigest()


class _FakeClock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        self.now_s += 1.0
        return self.now_s


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with Journal.open(tmp_path / "journal.sqlite3", clock=_FakeClock()) as j:
        yield j


def test_accept_assigns_increasing_seq_and_records_the_recipe(journal: Journal) -> None:
    """Each accepted recipe gets the next seq and is readable back as submitted, state "queued"."""
    seqs = [journal.accept(f"slot-{i}", *_recipe(f"slot-{i}")) for i in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    record = journal.get("slot-1")
    assert record is not None
    assert record.seq == seqs[1] and record.state == "queued" and record.attempts == 0
    assert record.recipe == {"slot_id": "slot-1", "speech": {"text": "Hello there."}}
    assert record.recipe_sha256 == _recipe("slot-1")[1]
    assert journal.get("never-submitted") is None


def test_resubmitting_the_same_recipe_is_idempotent_but_a_different_one_conflicts(journal: Journal) -> None:
    """Same slot_id + same sha256 returns the existing seq; a different recipe raises DuplicateSlot."""
    seq = journal.accept("s1", *_recipe("s1"))
    assert journal.accept("s1", *_recipe("s1")) == seq
    with pytest.raises(DuplicateSlot) as excinfo:
        journal.accept("s1", *_recipe("s1", "Something else."))
    assert excinfo.value.seq == seq and excinfo.value.slot_id == "s1"
    assert len(journal.list()) == 1


def test_a_terminal_slot_never_changes_or_runs_again(journal: Journal) -> None:
    """After "published", set_state and begin_attempt raise SlotFinished and the row is unchanged."""
    journal.accept("s1", *_recipe("s1"))
    assert journal.begin_attempt("s1") == 1
    journal.set_state("s1", "warping")
    done = journal.set_state("s1", "published", result={"video": "/out/s1/video.mp4"})
    assert done.terminal and done.result == {"video": "/out/s1/video.mp4"}
    with pytest.raises(SlotFinished):
        journal.set_state("s1", "published")
    with pytest.raises(SlotFinished):
        journal.set_state("s1", "warping")
    with pytest.raises(SlotFinished):
        journal.begin_attempt("s1")
    record = journal.get("s1")
    assert record is not None and record.state == "published" and record.attempts == 1


def test_unfinished_lists_only_slots_not_in_a_terminal_state_in_seq_order(tmp_path: Path) -> None:
    """After a restart, unfinished() gives the accepted-but-not-done slots oldest first."""
    path = tmp_path / "j.sqlite3"
    with Journal.open(path) as journal:
        for name in ("a", "b", "c", "d", "e"):
            journal.accept(name, *_recipe(name))
        journal.set_state("a", "published")
        journal.set_state("b", "warping")
        journal.set_state("c", "failed", error="no human face")
        journal.set_state("d", "cancelled")
    with Journal.open(path) as reopened:
        assert [r.slot_id for r in reopened.unfinished()] == ["b", "e"]
        assert reopened.get("c").error == "no human face"


def test_list_is_newest_first_with_limit_and_state_filter(journal: Journal) -> None:
    """list() returns the newest slots first, honours limit, and filters by state; counts() tallies."""
    for i in range(5):
        journal.accept(f"s{i}", *_recipe(f"s{i}"))
    journal.set_state("s1", "failed", error="boom")
    journal.set_state("s3", "failed", error="boom")
    assert [r.slot_id for r in journal.list(limit=3)] == ["s4", "s3", "s2"]
    assert [r.slot_id for r in journal.list(states=["failed"])] == ["s3", "s1"]
    assert journal.list(states=[]) == []
    assert journal.counts() == {"queued": 3, "failed": 2}
    with pytest.raises(JournalError):
        journal.list(limit=0)


def test_state_changes_and_attempts_are_recorded_as_events_in_order(journal: Journal) -> None:
    """Every transition appends a timestamped event; record_event adds custom ones."""
    journal.accept("s1", *_recipe("s1"))
    journal.begin_attempt("s1")
    journal.set_state("s1", "warping")
    journal.record_event("s1", "late", {"slack_s": -1.5})
    journal.set_state("s1", "late", error="missed its deadline")
    events = journal.events("s1")
    assert [(e.kind, (e.data or {}).get("state")) for e in events] == [
        ("state", "queued"), ("attempt", None), ("state", "warping"), ("late", None), ("state", "late")]
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert journal.events("s1", after_id=events[2].id)[0].kind == "late"
    with pytest.raises(SlotNotFound):
        journal.record_event("ghost", "late")


def test_unknown_slots_and_malformed_values_are_refused(journal: Journal) -> None:
    """Bad sha256, non-object JSON, bad state names and unknown slots raise JournalError subclasses."""
    recipe_json, sha = _recipe("s1")
    with pytest.raises(JournalError, match="sha256"):
        journal.accept("s1", recipe_json, "abc")
    with pytest.raises(JournalError, match="JSON"):
        journal.accept("s1", "{not json", sha)
    with pytest.raises(JournalError, match="object"):
        journal.accept("s1", "[1, 2]", sha)
    with pytest.raises(JournalError, match="slot_id"):
        journal.accept("", recipe_json, sha)
    with pytest.raises(SlotNotFound):
        journal.set_state("ghost", "warping")
    journal.accept("s1", recipe_json, sha)
    with pytest.raises(JournalError, match="state"):
        journal.set_state("s1", "DROP TABLE slots")
    with pytest.raises(JournalError, match="JSON"):
        journal.set_state("s1", "failed", result={"bad": float("nan")})
    assert journal.get("s1").state == "queued"  # the refused updates changed nothing


def test_the_journal_is_wal_with_a_schema_version_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    """The file is in WAL mode with user_version set; a journal from a newer vortexd is refused."""
    path = tmp_path / "j.sqlite3"
    Journal.open(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer"):
        Journal.open(path)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="unusable"):
        Journal.open(garbage)


def test_concurrent_accepts_from_threads_all_land_with_unique_seqs(journal: Journal) -> None:
    """Four threads accepting 50 recipes each: 200 rows, 200 distinct seqs, no error."""
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(50):
                journal.accept(f"t{k}-{i}", *_recipe(f"t{k}-{i}"))
                journal.set_state(f"t{k}-{i}", "warping")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    records = journal.list(limit=1000)
    assert len(records) == 200 and len({r.seq for r in records}) == 200
    assert journal.counts() == {"warping": 200}


_ACCEPTOR = textwrap.dedent("""
    import hashlib, json, sys
    from vortexd.journal import Journal
    journal = Journal.open(sys.argv[1])
    i = 0
    while True:
        slot_id = f"k-{i}"
        recipe_json = json.dumps({"slot_id": slot_id, "speech": {"text": "x" * (i % 97)}})
        journal.accept(slot_id, recipe_json, hashlib.sha256(recipe_json.encode()).hexdigest())
        # The acknowledgement: printed only after accept() returned.
        print(slot_id, flush=True)
        i += 1
""")


def test_every_acknowledged_recipe_survives_kill_9(tmp_path: Path) -> None:
    """A process accepting recipes in a loop is SIGKILLed mid-stream; reopening finds every acknowledged one."""
    path = tmp_path / "journal.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _ACCEPTOR, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    acknowledged: list[str] = []
    try:
        assert proc.stdout is not None
        while len(acknowledged) < 150:
            line = proc.stdout.readline()
            assert line, "the acceptor died before it was killed"
            acknowledged.append(line.strip())
    finally:
        # Killed while it is still accepting: the next transaction is cut off at a random point.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    acknowledged += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    with Journal.open(path) as journal:
        stored = {r.slot_id for r in journal.list(limit=10_000)}
        assert set(acknowledged) <= stored
        assert [r.slot_id for r in journal.unfinished()][:len(acknowledged)] == acknowledged
        assert len(stored) - len(acknowledged) <= 1  # at most the one committed but not yet printed
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_a_version_1_journal_is_migrated_to_queued(tmp_path: Path) -> None:
    """Journals written before the shared SlotState said "accepted": reopened, those slots are
    "queued" (and resume as such); the schema version moves to 2."""
    path = tmp_path / "journal.sqlite3"
    with Journal.open(path) as journal:
        journal.accept("old", *_recipe("old"))
    db = sqlite3.connect(path)
    db.execute("UPDATE slots SET state = 'accepted'")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with Journal.open(path) as journal:
        assert journal.get("old").state == "queued"
        assert [r.slot_id for r in journal.unfinished()] == ["old"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2
