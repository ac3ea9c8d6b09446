"""systemd notification protocol (sd_notify) over $NOTIFY_SOCKET, without libsystemd."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends READY=1, STATUS=…, STOPPING=1 and WATCHDOG=1 datagrams when run under systemd.

    Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op, so the daemon runs the same
    way from a terminal.
    """

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading "@" is Linux's abstract namespace, spelled with a NUL byte on the wire.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop: if the receiver's queue is full, a ping is simply lost
            # (and a systemd that stopped reading will restart us anyway).
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self._socket is not None

    def notify(self, *fields: str) -> None:
        """Send `fields` (e.g. "READY=1", "STATUS=serving") as one datagram."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError:
            # systemd went away or its queue is full: notifications are advisory.
            pass

    def ready(self, status: str) -> None:
        """Tell systemd start-up is complete."""
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """Update the one-line status shown by `systemctl status`."""
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd a graceful stop has begun."""
        self.notify("STOPPING=1", "STATUS=draining")

    def watchdog(self) -> None:
        """Keep-alive ping; must come from the event loop so a stalled loop stops the pings."""
        self.notify("WATCHDOG=1")


def watchdog_interval_s() -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2
