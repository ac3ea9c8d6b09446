"""Who may hold a control connection, and how a connection over a limit is still heard.

A *held* connection is served like any other (requests until the idle timeout). At most
`max_connections` are held in all and at most `max_connections_per_peer` by one process (its
uid and pid from SO_PEERCRED), so one client cannot take the house.

A connection over either limit is still *heard*: the server reads its first line (for a short
while) so that `health` is recognised and answered whatever the flood; anything else is told
`busy`, naming the limit. Heard connections are bounded too, per peer and in all, and a newcomer
pushes out the oldest heard connection of the peer that has the most: silent connections can
never hold the way in, and an operator's single connection is never the one pushed out.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vortexd.control.protocol import Peer

PeerKey = tuple[int, int] | None
"""(uid, pid) of a connection's process; None where SO_PEERCRED is not available."""


def peer_key(peer: Peer | None) -> PeerKey:
    """The key a peer's connections are counted under: one process of one user."""
    return None if peer is None else (peer.uid, peer.pid)


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits admission enforces (ControlServerOptions carries them from the settings)."""

    max_connections: int = 64
    max_connections_per_peer: int = 16
    max_heard: int = 64
    """Connections over a limit whose first line is being read, in all."""
    max_heard_per_peer: int = 4
    """... and from one process; its oldest is pushed out first."""


@dataclass(frozen=True)
class Refusal:
    """Why a connection is not held: the limit it ran into, for the `busy` error."""

    limit: str
    """The option's name: "max_connections" or "max_connections_per_peer"."""
    value: int
    peer: Peer | None = None

    def message(self) -> str:
        """What the client is told, naming the limit."""
        if self.limit == "max_connections_per_peer":
            who = f"pid {self.peer.pid}, uid {self.peer.uid}" if self.peer else "this process"
            return (f"too many control connections from one process ({who}): limit {self.value} "
                    f"per process (max_connections_per_peer); only health is answered")
        return f"too many control connections (limit {self.value}, max_connections); only health is answered"

    def details(self) -> dict[str, Any]:
        """Machine-readable details of the busy error."""
        details: dict[str, Any] = {"limit": self.limit, "value": self.value}
        if self.peer is not None:
            details.update(pid=self.peer.pid, uid=self.peer.uid)
        return details


@dataclass(eq=False)
class Hearing:
    """One heard connection; `expire` ends its wait for a first line at once (when pushed out)."""

    key: PeerKey
    expire: Callable[[], None]
    pushed_out: bool = field(default=False)


class Admission:
    """Counts held and heard connections by peer and decides which are held, heard or pushed out."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._held: Counter[PeerKey] = Counter()
        self._held_total = 0
        self._heard: dict[PeerKey, deque[Hearing]] = {}
        self._heard_total = 0
        self.pushed_out = 0

    @property
    def held(self) -> int:
        """Connections held right now."""
        return self._held_total

    @property
    def heard(self) -> int:
        """Connections over a limit whose first line is being read right now."""
        return self._heard_total

    def held_by(self, peer: Peer | None) -> int:
        """Connections held right now for `peer`'s process."""
        return self._held.get(peer_key(peer), 0)

    def hold(self, peer: Peer | None) -> Refusal | None:
        """Hold a connection from `peer` (None), or say which limit refuses it (counted nothing)."""
        key = peer_key(peer)
        if self._held[key] >= self.limits.max_connections_per_peer:
            return Refusal("max_connections_per_peer", self.limits.max_connections_per_peer, peer)
        if self._held_total >= self.limits.max_connections:
            return Refusal("max_connections", self.limits.max_connections, peer)
        self._held[key] += 1
        self._held_total += 1
        return None

    def release(self, peer: Peer | None) -> None:
        """A held connection from `peer` ended."""
        key = peer_key(peer)
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
        self._held_total -= 1

    def hear(self, peer: Peer | None, expire: Callable[[], None]) -> Hearing:
        """Start hearing a connection over a limit, pushing out older ones to stay within bounds."""
        key = peer_key(peer)
        mine = self._heard.get(key)
        if mine is not None and len(mine) >= self.limits.max_heard_per_peer:
            self._push_out(mine[0])
        if self._heard_total >= self.limits.max_heard:
            # The peer with the most heard connections pays: a flood, never a lone operator.
            busiest = max(self._heard.values(), key=len)
            self._push_out(busiest[0])
        hearing = Hearing(key, expire)
        self._heard.setdefault(key, deque()).append(hearing)
        self._heard_total += 1
        return hearing

    def done(self, hearing: Hearing) -> None:
        """A heard connection's first line came (or its wait ended): it no longer counts."""
        if not hearing.pushed_out:
            self._forget(hearing)

    def _push_out(self, hearing: Hearing) -> None:
        self._forget(hearing)
        hearing.pushed_out = True
        self.pushed_out += 1
        hearing.expire()

    def _forget(self, hearing: Hearing) -> None:
        queue = self._heard[hearing.key]
        queue.remove(hearing)
        if not queue:
            del self._heard[hearing.key]
        self._heard_total -= 1
