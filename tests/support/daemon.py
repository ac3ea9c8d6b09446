"""Run a real `vortexd serve` subprocess on a temporary socket (for tests and benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vortexd.control.client import ControlClient


def _toml_value(value: Any) -> str:
    """`value` as a TOML value: tables inline (nested as needed), paths and other objects as strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_toml_value(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml_value(v)}" for key, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(folder: Path, **overrides: Any) -> Path:
    """A settings TOML for a daemon living entirely inside `folder` (socket, journal, outputs).
    The live channel is off unless asked for (`channel=True`): its filler costs each start a
    render, and only the channel's own tests need it."""
    values: dict[str, Any] = {
        "output_dir": str(folder / "out"), "journal_path": str(folder / "journal.sqlite3"),
        "socket_path": str(folder / "control.sock"), "socket_group": "", "allowed_roots": [str(folder)],
        "metrics_port": 0, "arena_prefault": False, "cadence_s": 6.0, "margin_s": 1.0,
        "max_slot_frames": 144, "drain_timeout_s": 20.0, "kokoro_warm_up": False, "channel": False,
    }
    values.update(overrides)
    lines = [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    path = folder / "vortexd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class DaemonProcess:
    """A vortexd subprocess, READY once `start()` returns (it waits for sd_notify READY=1)."""

    folder: Path
    config: Path
    process: subprocess.Popen | None = None
    notify: socket.socket | None = None
    notifications: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        """The control socket."""
        return self.folder / "control.sock"

    def start(self, timeout_s: float = 120.0) -> float:
        """Start the daemon and wait for READY=1; returns seconds from spawn to READY."""
        notify_path = self.folder / f"notify-{time.monotonic_ns()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"}
        log = open(self.folder / "daemon.log", "ab")
        started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "vortexd.cli", "serve", "--config", str(self.config)],
                                        env=env, stdout=log, stderr=log)
        self.notify.settimeout(0.5)
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"vortexd exited with {self.process.returncode}: {self.log_tail()}")
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            self.notifications.append(message)
            if "READY=1" in message:
                return time.monotonic() - started
        raise TimeoutError(f"vortexd not READY after {timeout_s} s: {self.log_tail()}")

    def client(self, timeout_s: float = 30.0) -> ControlClient:
        """A connected control client."""
        return ControlClient(self.socket_path, timeout_s=timeout_s).connect()

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request on a fresh connection."""
        with self.client() as client:
            return client.request(op, args)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # Leave a Python stack dump of every thread in the log, then fail loudly.
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(10)
            raise
        finally:
            if self.notify is not None:
                self.notify.close()

    def log_tail(self, n_chars: int = 3000) -> str:
        """The end of the daemon's log (for assertion messages)."""
        path = self.folder / "daemon.log"
        return path.read_text(errors="replace")[-n_chars:] if path.exists() else ""


def wait_for(predicate, timeout_s: float, what: str) -> None:
    """Poll `predicate()` every 0.1 s until it is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def journal_rows(folder: Path) -> dict[str, dict[str, Any]]:
    """Every slot the daemon in `folder` ever accepted, as its journal (SQLite, read directly) has
    it: slot_id → {state, error, attempts}. Read from the file, so it works with the daemon stopped."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(folder / "journal.sqlite3", timeout=10)) as db:
        rows = db.execute("SELECT slot_id, state, error, attempts FROM slots").fetchall()
    return {slot_id: {"state": state, "error": error, "attempts": attempts}
            for slot_id, state, error, attempts in rows}


def journal_state_counts(folder: Path, state: str) -> dict[str, int]:
    """How many times the journal recorded each slot entering `state` (a slot published twice
    shows 2)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(folder / "journal.sqlite3", timeout=10)) as db:
        rows = db.execute("SELECT slot_id, data_json FROM events WHERE kind = 'state'").fetchall()
    counts: dict[str, int] = {}
    for slot_id, data in rows:
        if json.loads(data or "{}").get("state") == state:
            counts[slot_id] = counts.get(slot_id, 0) + 1
    return counts


def scrape_metrics(daemon: DaemonProcess) -> dict[str, float]:
    """The daemon's /metrics as {series: value} (series with their labels, as Prometheus writes them)."""
    import urllib.request

    port = daemon.request("status")["result"]["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


class StateWatcher:
    """Subscribes to a daemon's events in a thread and keeps every slot state change it hears,
    with the monotonic time it heard it; `on_state(slot_id, state)` runs in that thread as each
    arrives (e.g. to signal the daemon at an exact moment of a slot)."""

    def __init__(self, daemon: DaemonProcess, on_state=None) -> None:
        self.daemon = daemon
        self.seen: list[tuple[float, str, str]] = []
        self._on_state = on_state
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def start(self) -> StateWatcher:
        """Start listening; returns once the subscription is answered (no event is missed after)."""
        self._thread.start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the daemon did not answer subscribe")
        return self

    def _listen(self) -> None:
        with self.daemon.client(timeout_s=None) as client:
            _, events = client.subscribe()
            self._subscribed.set()
            for message in events:
                event = message.get("event", {})
                if event.get("kind") != "state":
                    continue
                slot_id, state = event["slot_id"], event["data"]["state"]
                self.seen.append((time.monotonic(), slot_id, state))
                if self._on_state is not None:
                    self._on_state(slot_id, state)

    def latest(self) -> dict[str, str]:
        """Each slot's last state heard so far."""
        return {slot_id: state for _, slot_id, state in list(self.seen)}

    def when(self, slot_id: str, state: str) -> float | None:
        """When `slot_id` was first heard entering `state` (None: not yet)."""
        return next((at for at, sid, st in list(self.seen) if sid == slot_id and st == state), None)
