"""The slot journal: accepted recipes and slot states in SQLite, durable before they are acknowledged.

A recipe counts as accepted only once `Journal.accept` has returned, and it returns only after the
row is committed with `synchronous=FULL` in WAL mode, so `kill -9` (or a power cut) right after the
acknowledgement loses nothing. Every state change is appended to `events` in the same transaction,
which gives `vortexctl` a history and the daemon a resume point: `unfinished()` lists the slots that
were accepted but never reached a terminal state.

One connection, guarded by a lock, so the daemon may call it from worker threads
(`asyncio.to_thread`); each call is one short transaction.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vortexd.slot_state import LEGACY_NAMES, TERMINAL_STATES, SlotState

SCHEMA_VERSION = 2
"""Stored in `PRAGMA user_version`; a journal with a higher number was written by a newer vortexd.
2: an accepted slot's state is `queued`, as in the scheduler and the events (1 wrote `accepted`)."""

MAX_LIST_LIMIT = 10_000
_STATE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_STATE_NAMES = tuple(str(state) for state in SlotState)
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_SCHEMA = """
CREATE TABLE slots (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    slot_id       TEXT NOT NULL UNIQUE,
    recipe_json   TEXT NOT NULL,
    recipe_sha256 TEXT NOT NULL,
    accepted_at   REAL NOT NULL,
    state         TEXT NOT NULL,
    state_at      REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    result_json   TEXT
);
CREATE INDEX slots_by_state ON slots(state, seq);
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    slot_id   TEXT NOT NULL REFERENCES slots(slot_id),
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    data_json TEXT
);
CREATE INDEX events_by_slot ON events(slot_id, id);
"""


class JournalError(Exception):
    """The journal cannot do what was asked; the message says why."""


class DuplicateSlot(JournalError):
    """A different recipe was already accepted under this slot_id."""

    def __init__(self, slot_id: str, existing_sha256: str, seq: int) -> None:
        super().__init__(f"slot {slot_id!r} was already accepted (seq {seq}) with a different recipe "
                         f"(sha256 {existing_sha256[:12]}…)")
        self.slot_id = slot_id
        self.existing_sha256 = existing_sha256
        self.seq = seq


class SlotNotFound(JournalError):
    """No slot with this slot_id was ever accepted."""

    def __init__(self, slot_id: str) -> None:
        super().__init__(f"no slot {slot_id!r} in the journal")
        self.slot_id = slot_id


class SlotFinished(JournalError):
    """The slot is already in a terminal state; it must not change (or run) again."""

    def __init__(self, slot_id: str, state: str) -> None:
        super().__init__(f"slot {slot_id!r} is already {state}")
        self.slot_id = slot_id
        self.state = state


@dataclass(frozen=True)
class SlotRecord:
    """One row of `slots`: a recipe the daemon accepted and where it stands."""

    seq: int
    slot_id: str
    recipe_json: str
    recipe_sha256: str
    accepted_at: float
    state: str
    state_at: float
    attempts: int
    error: str | None
    result: dict[str, Any] | None

    @property
    def terminal(self) -> bool:
        """True once the slot is published, failed, late or cancelled."""
        return self.state in TERMINAL_STATES

    @property
    def recipe(self) -> dict[str, Any]:
        """The accepted recipe mapping, as submitted."""
        return json.loads(self.recipe_json)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view without the recipe body (what `slots`/`status` answers carry)."""
        return {"seq": self.seq, "slot_id": self.slot_id, "state": self.state,
                "accepted_at": self.accepted_at, "state_at": self.state_at,
                "attempts": self.attempts, "error": self.error, "result": self.result,
                "recipe_sha256": self.recipe_sha256}


@dataclass(frozen=True)
class JournalEvent:
    """One row of `events`: something that happened to a slot."""

    id: int
    slot_id: str
    at: float
    kind: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the shape the control socket streams)."""
        return {"id": self.id, "slot_id": self.slot_id, "at": self.at, "kind": self.kind, "data": self.data}


def _dumps(value: Any, field: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JournalError(f"{field} is not JSON-serialisable: {exc}") from None


def _record(row: sqlite3.Row) -> SlotRecord:
    return SlotRecord(seq=row["seq"], slot_id=row["slot_id"], recipe_json=row["recipe_json"],
                      recipe_sha256=row["recipe_sha256"], accepted_at=row["accepted_at"],
                      state=row["state"], state_at=row["state_at"], attempts=row["attempts"],
                      error=row["error"],
                      result=None if row["result_json"] is None else json.loads(row["result_json"]))


def _check_slot_id(slot_id: Any) -> None:
    if not isinstance(slot_id, str) or not slot_id:
        raise JournalError(f"slot_id must be a non-empty string, got {slot_id!r}")


class Journal:
    """The durable record of accepted slots. Build it with `Journal.open(path)`."""

    def __init__(self, connection: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self._clock = clock
        self.path = path

    @classmethod
    def open(cls, path: Path | str, *, clock: Callable[[], float] = time.time) -> Journal:
        """Open (creating if needed) the journal at `path`: WAL, synchronous=FULL, schema checked."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit is never implicit.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from None
        try:
            db.row_factory = sqlite3.Row
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(f"journal {path}: the filesystem refused WAL mode (got {mode!r})")
            # FULL: the WAL is fsynced at every commit, so an acknowledged recipe survives power loss too.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            cls._migrate(db, path)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise JournalError(f"journal {path} is unusable: {exc}") from None
        except JournalError:
            db.close()
            raise
        return cls(db, path, clock)

    @staticmethod
    def _migrate(db: sqlite3.Connection, path: Path) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise JournalError(f"journal {path} has schema {version}, newer than this vortexd "
                               f"understands ({SCHEMA_VERSION}); upgrade vortexd")
        # Statement by statement inside one transaction (executescript would commit implicitly).
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                db.execute("COMMIT")  # another process created the schema while we waited
                return
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
            for legacy, state in LEGACY_NAMES.items():
                db.execute("UPDATE slots SET state = ? WHERE state = ?", (str(state), legacy))
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Checkpoint and close the connection (safe to call twice)."""
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; committed (and fsynced) when the block ends."""
        with self._lock:
            # IMMEDIATE takes the write lock up front, so a read-then-write cannot race another writer.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _row(self, db: sqlite3.Connection, slot_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM slots WHERE slot_id = ?", (slot_id,)).fetchone()
        if row is None:
            raise SlotNotFound(slot_id)
        return row

    def _event(self, db: sqlite3.Connection, slot_id: str, at: float, kind: str, data: Any) -> int:
        cursor = db.execute("INSERT INTO events (slot_id, at, kind, data_json) VALUES (?, ?, ?, ?)",
                            (slot_id, at, kind, _dumps(data, "event data")))
        return int(cursor.lastrowid)

    def accept(self, slot_id: str, recipe_json: str, recipe_sha256: str) -> int:
        """Record a recipe as accepted and return its seq, only after the commit reached the disk.

        Resubmitting the same recipe (same sha256) under the same slot_id is idempotent and returns
        the existing seq; a different recipe under a known slot_id raises `DuplicateSlot`.
        """
        _check_slot_id(slot_id)
        if not isinstance(recipe_sha256, str) or not _SHA256_PATTERN.match(recipe_sha256):
            raise JournalError("recipe_sha256 must be 64 lowercase hex digits")
        try:
            if not isinstance(json.loads(recipe_json), dict):
                raise JournalError("recipe_json must encode a JSON object")
        except (TypeError, ValueError):
            raise JournalError("recipe_json is not valid JSON") from None
        with self._write() as db:
            existing = db.execute("SELECT seq, recipe_sha256 FROM slots WHERE slot_id = ?",
                                  (slot_id,)).fetchone()
            if existing is not None:
                if existing["recipe_sha256"] != recipe_sha256:
                    raise DuplicateSlot(slot_id, existing["recipe_sha256"], existing["seq"])
                seq = int(existing["seq"])
            else:
                now = self._clock()
                cursor = db.execute(
                    "INSERT INTO slots (slot_id, recipe_json, recipe_sha256, accepted_at, state, state_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (slot_id, recipe_json, recipe_sha256, now, SlotState.QUEUED, now))
                seq = int(cursor.lastrowid)
                self._event(db, slot_id, now, "state", {"state": SlotState.QUEUED, "seq": seq})
        # Returned only here, after COMMIT: the caller may acknowledge the submit now.
        return seq

    def set_state(self, slot_id: str, state: str, error: str | None = None,
                  result: dict[str, Any] | None = None) -> SlotRecord:
        """Move a slot to `state` (recording `error`/`result`), append a "state" event, return the row.

        A slot in a terminal state never changes again (`SlotFinished`): that is what keeps a slot
        from being published twice after a restart.
        """
        if state not in _STATE_NAMES:
            raise JournalError(f"state must be one of {', '.join(_STATE_NAMES)}, got {state!r}")
        if error is not None and not isinstance(error, str):
            raise JournalError("error must be a string")
        result_json = _dumps(result, "result")
        with self._write() as db:
            row = self._row(db, slot_id)
            if row["state"] in TERMINAL_STATES:
                raise SlotFinished(slot_id, row["state"])
            now = self._clock()
            db.execute("UPDATE slots SET state = ?, state_at = ?, error = ?, "
                       "result_json = COALESCE(?, result_json) WHERE slot_id = ?",
                       (state, now, error, result_json, slot_id))
            self._event(db, slot_id, now, "state", {"state": state, "error": error})
            updated = self._row(db, slot_id)
        return _record(updated)

    def begin_attempt(self, slot_id: str) -> int:
        """Count one more run of the slot and return the new attempt number (1 for the first run)."""
        with self._write() as db:
            row = self._row(db, slot_id)
            if row["state"] in TERMINAL_STATES:
                raise SlotFinished(slot_id, row["state"])
            attempts = int(row["attempts"]) + 1
            db.execute("UPDATE slots SET attempts = ? WHERE slot_id = ?", (attempts, slot_id))
            self._event(db, slot_id, self._clock(), "attempt", {"attempt": attempts})
        return attempts

    def record_event(self, slot_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        """Append an event (e.g. "late", "verify") for a known slot; returns its id."""
        if not isinstance(kind, str) or not _STATE_PATTERN.match(kind):
            raise JournalError(f"event kind must be a lowercase identifier, got {kind!r}")
        with self._write() as db:
            self._row(db, slot_id)
            return self._event(db, slot_id, self._clock(), kind, data)

    def get(self, slot_id: str) -> SlotRecord | None:
        """The slot's row, or None if it was never accepted."""
        with self._lock:
            row = self._db.execute("SELECT * FROM slots WHERE slot_id = ?", (slot_id,)).fetchone()
        return None if row is None else _record(row)

    def list(self, limit: int = 100, states: Sequence[str] | None = None) -> list[SlotRecord]:
        """The newest `limit` slots (highest seq first), optionally only those in `states`."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise JournalError(f"limit must be an integer in 1..{MAX_LIST_LIMIT}, got {limit!r}")
        query, params = "SELECT * FROM slots", []
        if states is not None:
            states = [states] if isinstance(states, str) else list(states)
            query += f" WHERE state IN ({', '.join('?' * len(states))})" if states else " WHERE 0"
            params.extend(states)
        query += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [_record(row) for row in rows]

    def unfinished(self) -> list[SlotRecord]:
        """Slots accepted but not yet in a terminal state, oldest first: what a restart resumes."""
        terminal = sorted(TERMINAL_STATES)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM slots WHERE state NOT IN ({', '.join('?' * len(terminal))}) ORDER BY seq",
                terminal).fetchall()
        return [_record(row) for row in rows]

    def events(self, slot_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[JournalEvent]:
        """Events with id > `after_id` (of one slot, or all), oldest first, at most `limit`."""
        query = "SELECT * FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if slot_id is not None:
            query += " AND slot_id = ?"
            params.append(slot_id)
        query += " ORDER BY id LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, max(1, min(limit, MAX_LIST_LIMIT)))).fetchall()
        return [JournalEvent(id=r["id"], slot_id=r["slot_id"], at=r["at"], kind=r["kind"],
                             data=None if r["data_json"] is None else json.loads(r["data_json"]))
                for r in rows]

    def counts(self) -> dict[str, int]:
        """How many slots are in each state (for `status` and metrics)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM slots GROUP BY state").fetchall()
        return {row["state"]: int(row["n"]) for row in rows}
