"""A small blocking client for the control socket (what `vortexctl` and tests use).

Blocking sockets, no asyncio: a command-line client does one thing at a time, and this keeps it
usable from threads, scripts and tests that already run an event loop elsewhere.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vortexd.control.protocol import encode_line

_MAX_RESPONSE_BYTES = 16 << 20
"""Answers can be larger than requests (a `slots` listing of 10,000 rows is ~3 MiB), but not unbounded."""


class DaemonUnavailable(ConnectionError):
    """The daemon cannot be reached; `hint` says what to check."""

    def __init__(self, path: Path, reason: str, hint: str) -> None:
        super().__init__(f"cannot reach vortexd at {path}: {reason}")
        self.path = path
        self.reason = reason
        self.hint = hint


class ProtocolViolation(ConnectionError):
    """The daemon answered something that is not a protocol line (or hung up mid-answer)."""


class ConnectionClosed(ProtocolViolation):
    """The daemon closed the connection (end of a stream, or shutdown)."""


class ControlClient:
    """One connection to the control socket. Use as a context manager."""

    def __init__(self, path: Path | str, timeout_s: float | None = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._file: Any = None

    def connect(self) -> ControlClient:
        """Open the connection, turning OS errors into `DaemonUnavailable` with a useful hint."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(str(self.path))
        except FileNotFoundError:
            sock.close()
            raise DaemonUnavailable(self.path, "no such socket",
                                    "is vortexd running? (systemctl status vortexd; --socket or "
                                    "VORTEX_SOCKET choose another path)") from None
        except ConnectionRefusedError:
            sock.close()
            raise DaemonUnavailable(self.path, "connection refused",
                                    "the socket exists but nobody listens: vortexd is not running "
                                    "(systemctl status vortexd)") from None
        except PermissionError:
            sock.close()
            raise DaemonUnavailable(self.path, "permission denied",
                                    "the socket is mode 0660: run as a member of the daemon's group "
                                    "(usually 'vortex')") from None
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(self.path, exc.strerror or str(exc), "check --socket / VORTEX_SOCKET") from None
        self._sock = sock
        self._file = sock.makefile("rb")
        return self

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its id."""
        if self._sock is None:
            self.connect()
        request_id = next(self._ids)
        message: dict[str, Any] = {"id": request_id, "op": op}
        if args:
            message["args"] = dict(args)
        assert self._sock is not None
        self._sock.sendall(encode_line(message))
        return request_id

    def read(self, timeout_s: float | None = -1.0) -> dict[str, Any]:
        """The next line from the daemon, parsed (`timeout_s` None waits forever; -1 keeps the default)."""
        assert self._sock is not None and self._file is not None
        if timeout_s != -1.0:
            self._sock.settimeout(timeout_s)
        try:
            line = self._file.readline(_MAX_RESPONSE_BYTES)
        except socket.timeout:
            raise ProtocolViolation(f"no answer from vortexd within {self._sock.gettimeout()} s") from None
        finally:
            if timeout_s != -1.0 and self._sock is not None:
                self._sock.settimeout(self.timeout_s)
        if not line:
            raise ConnectionClosed("vortexd closed the connection")
        try:
            message = json.loads(line)
        except ValueError:
            raise ProtocolViolation(f"vortexd sent a line that is not JSON: {line[:80]!r}") from None
        if not isinstance(message, dict):
            raise ProtocolViolation("vortexd sent a line that is not a JSON object")
        return message

    def request(self, op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and return the raw response envelope ({"id", "ok", "result"|"error"})."""
        self.send(op, args)
        return self.read()

    def subscribe(self, slot_id: str | None = None) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
        """Start a subscription: the response envelope and an iterator over the event lines that follow.

        The iterator waits for events without a timeout and ends when the daemon ends the stream.
        """
        response = self.request("subscribe", {"slot_id": slot_id} if slot_id else None)

        def events() -> Iterator[dict[str, Any]]:
            while True:
                try:
                    yield self.read(timeout_s=None)
                except ConnectionClosed:
                    return

        return response, events()
