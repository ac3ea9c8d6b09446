"""A bounded buffer between an event source and one `subscribe` connection."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any


class Subscription:
    """A bounded buffer between an event source and one subscriber: the oldest events drop first,
    so a slow or stalled subscriber loses events (and is told how many) instead of holding up the
    daemon."""

    def __init__(self, events: AsyncIterator[Mapping[str, Any]], capacity: int) -> None:
        self._events = events
        self._queue: deque[Mapping[str, Any]] = deque()
        self._capacity = max(1, capacity)
        self._dropped = 0
        self._wake = asyncio.Event()
        self._ended = False
        self.error: BaseException | None = None

    async def pump(self) -> None:
        """Move events from the source into the buffer as fast as they come (never blocks the source)."""
        try:
            async for event in self._events:
                if len(self._queue) >= self._capacity:
                    self._queue.popleft()
                    self._dropped += 1
                self._queue.append(event)
                self._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
        self._ended = True
        self._wake.set()

    async def next(self, leave: asyncio.Task) -> Mapping[str, Any] | None:
        """The next event to write (a "dropped" notice first if events were lost), or None when done."""
        while not self._queue:
            if self._ended or leave.done():
                return None
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter, leave}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        if leave.done():
            return None
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return {"kind": "dropped", "count": count}
        return self._queue.popleft()
