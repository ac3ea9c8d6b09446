"""Reading request lines off a control connection with a hard cap on what is buffered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

READ_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class TooLong:
    """Marker for a line that exceeded the limit and was discarded."""

    line_bytes: int


class LineReader:
    """Newline-terminated lines from a stream, each at most `limit_bytes`; longer lines are skipped.

    asyncio's `readline` clears its buffer on overflow but then returns the rest of the long line
    as if it were a new line; this reader discards up to the next newline instead.
    """

    def __init__(self, reader: asyncio.StreamReader, limit_bytes: int) -> None:
        self._reader = reader
        self._limit_bytes = limit_bytes
        self._buffer = bytearray()
        self._discarded_bytes = 0
        self._discarding = False
        self._eof = False

    async def next(self) -> bytes | TooLong | None:
        """The next line (without its newline), a `TooLong` marker, or None at end of stream."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if self._discarding or newline > self._limit_bytes:
                    too_long = TooLong(self._discarded_bytes + newline)
                    self._discarding, self._discarded_bytes = False, 0
                    return too_long
                return line
            if self._discarding or len(self._buffer) > self._limit_bytes:
                # Drop what we hold: memory stays bounded however long the line is.
                self._discarding = True
                self._discarded_bytes += len(self._buffer)
                self._buffer.clear()
            if self._eof:
                if self._discarding:
                    self._discarding = False
                    return TooLong(self._discarded_bytes)
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None
            chunk = await self._reader.read(READ_CHUNK_BYTES)
            if not chunk:
                self._eof = True
            self._buffer += chunk

    async def next_request(self) -> bytes | TooLong | None:
        """The next line that is not blank (blank lines are typing noise, never a request)."""
        while True:
            item = await self.next()
            if not (isinstance(item, bytes) and not item.strip()):
                return item


async def until_eof(lines: LineReader) -> None:
    """Consume (and ignore) what a client sends, returning when it disconnects."""
    while await lines.next() is not None:
        pass
