"""The daemon's event stream: slot state changes and progress, fanned out to subscribers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

SUBSCRIBER_QUEUE_EVENTS = 1024
"""Per-subscriber backlog; a subscriber that falls further behind loses its oldest events."""


class EventBus:
    """Publishes `{"slot_id", "kind", "at", "data"}` events to every live subscriber.

    Publishing never blocks: the daemon's stages must not wait for a slow client.
    """

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue] = set()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        """Live subscriptions."""
        return len(self._queues)

    def publish(self, slot_id: str, kind: str, **data: Any) -> dict[str, Any]:
        """Send one event to all subscribers and return it."""
        event = {"slot_id": slot_id, "kind": kind, "at": round(time.time(), 3), "data": data}
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()  # drop the oldest: a live view matters more than history
            queue.put_nowait(event)
        return event

    async def subscribe(self, slot_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events from now on (only `slot_id`'s when given), until the bus closes."""
        if self._closed:
            return
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE_EVENTS)
        self._queues.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                if slot_id is None or event["slot_id"] == slot_id:
                    yield event
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        """End every subscription."""
        self._closed = True
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
