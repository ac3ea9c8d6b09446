"""The control socket server: JSON lines over a Unix socket, hostile input contained per line.

Every line gets exactly one response (blank lines are ignored, and a connection that sends no
request for `idle_timeout_s` is told so and closed); nothing a client sends can make
the server buffer more than `max_line_bytes` (plus one read chunk), raise out of a connection
task, or block another connection. A `subscribe` request turns its connection into an event
stream fed through a bounded queue, so a slow or stalled subscriber loses its oldest events
(and is told how many) instead of holding up the daemon.
"""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import stat
import struct
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from vortexd.control.protocol import (
    MAX_LINE_BYTES,
    ControlError,
    Peer,
    Request,
    encode_line,
    error_from_exception,
    error_response,
    ok_response,
    parse_request,
)

Handler = Callable[[Request], Awaitable["Mapping[str, Any] | AsyncIterator[Mapping[str, Any]]"]]
"""Answers a request: a result mapping, or for `subscribe` an async iterator of event mappings."""

_READ_CHUNK_BYTES = 64 * 1024
_UNIX_PATH_MAX_BYTES = 107  # sun_path is 108 bytes including the terminating NUL

log = structlog.get_logger("vortexd.control")


class ControlServerError(RuntimeError):
    """The server cannot start: the socket path is taken, too long, or not a socket."""


@dataclass(frozen=True)
class ControlServerOptions:
    """Limits of the control server (the lead maps daemon settings onto these)."""

    max_line_bytes: int = MAX_LINE_BYTES
    max_connections: int = 64
    subscriber_queue: int = 1024
    """Events buffered per subscriber before the oldest are dropped."""
    write_timeout_s: float = 30.0
    """A client that does not read for this long is disconnected (its socket buffer is full)."""
    close_grace_s: float = 5.0
    """How long `close()` lets requests in progress finish before cancelling them."""
    idle_timeout_s: float = 30.0
    """A connection that sends no request for this long is told so and closed (blank lines do
    not count as requests), so idle clients cannot hold the connection slots."""
    reserve_connections: int = 8
    """Connections beyond max_connections that may still ask `health` (one line, then closed)."""
    reserve_timeout_s: float = 2.0
    """How long a reserve connection has to send its one line."""


@dataclass(frozen=True)
class _TooLong:
    """Marker for a line that exceeded the limit and was discarded."""

    line_bytes: int


class _LineReader:
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

    async def next(self) -> bytes | _TooLong | None:
        """The next line (without its newline), a `_TooLong` marker, or None at end of stream."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if self._discarding or newline > self._limit_bytes:
                    too_long = _TooLong(self._discarded_bytes + newline)
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
                    return _TooLong(self._discarded_bytes)
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None
            chunk = await self._reader.read(_READ_CHUNK_BYTES)
            if not chunk:
                self._eof = True
            self._buffer += chunk


def _peer_of(writer: asyncio.StreamWriter) -> Peer | None:
    """SO_PEERCRED of the connection (pid, uid, gid), or None where the platform lacks it."""
    sock = writer.get_extra_info("socket")
    try:
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
    except (AttributeError, OSError, struct.error):
        return None
    return Peer(pid=pid, uid=uid, gid=gid)


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch a live socket or a non-socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlServerError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale: left behind by a daemon that died
        return
    except OSError as exc:
        raise ControlServerError(f"cannot probe existing socket {path}: {exc}") from None
    finally:
        probe.close()
    raise ControlServerError(f"another process is already serving on {path}")


def _bind(path: Path, mode: int, group: str | int | None) -> socket.socket:
    """A listening socket at `path` that is never reachable with the wrong mode or group.

    It is bound under a temporary name, chmod/chgrp'd, then renamed into place, so no client can
    connect in the window between bind and chmod.
    """
    if len(os.fsencode(path)) > _UNIX_PATH_MAX_BYTES:
        raise ControlServerError(f"socket path {path} is longer than {_UNIX_PATH_MAX_BYTES} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(path)
    temporary = path.parent / f".vx{os.getpid()}.tmp"
    if len(os.fsencode(temporary)) > _UNIX_PATH_MAX_BYTES:
        temporary = path  # no room for the temporary name: bind in place, chmod right after
    temporary.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        gid = _group_id(group)
        if gid is not None:
            try:
                os.chown(temporary, -1, gid)
            except PermissionError as exc:
                log.warning("control_socket_chgrp_failed", path=str(path), group=group, error=str(exc))
        if temporary != path:
            os.rename(temporary, path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        temporary.unlink(missing_ok=True)
        raise
    return sock


def _group_id(group: str | int | None) -> int | None:
    """The gid of `group` if it exists; a missing group is logged and skipped (e.g. on a dev box)."""
    if group is None:
        return None
    try:
        return grp.getgrgid(group).gr_gid if isinstance(group, int) else grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("control_socket_group_missing", group=group)
        return None


class ControlServer:
    """The daemon's control socket. `await start()`, later `await close()` (or `async with`)."""

    def __init__(self, path: Path | str, handler: Handler, mode: int = 0o660,
                 group: str | int | None = None, options: ControlServerOptions | None = None) -> None:
        self.path = Path(path)
        self.mode = mode
        self.group = group
        self.options = options or ControlServerOptions()
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._connections: dict[asyncio.Task, str] = {}  # task -> "idle" | "busy" | "stream"
        self._closing = False
        self.requests_total = 0
        self.errors_by_code: Counter[str] = Counter()
        self._reserve_in_use = 0

    @property
    def connection_count(self) -> int:
        """Clients connected right now."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind the socket (mode/group applied before it is reachable) and start accepting."""
        sock = _bind(self.path, self.mode, self.group)
        self._inode = self.path.stat().st_ino
        self._server = await asyncio.start_unix_server(self._on_connection, sock=sock)
        log.info("control_socket_listening", path=str(self.path), mode=oct(self.mode), group=self.group)

    async def close(self) -> None:
        """Stop accepting, let requests in progress finish (up to the grace), end streams, unlink."""
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        busy = [task for task, state in self._connections.items() if state == "busy"]
        for task, state in list(self._connections.items()):
            if state != "busy":
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=self.options.close_grace_s)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=self.options.close_grace_s)
        await self._server.wait_closed()
        self._server = None
        try:
            if self.path.stat().st_ino == self._inode:  # do not remove a successor's socket
                self.path.unlink()
        except FileNotFoundError:
            pass
        log.info("control_socket_closed", path=str(self.path))

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing or len(self._connections) >= self.options.max_connections:
            await self._full_house(reader, writer)
            return
        self._connections[task] = "idle"
        peer = _peer_of(writer)
        clog = log.bind(peer_pid=peer.pid if peer else None, peer_uid=peer.uid if peer else None)
        try:
            await self._serve(reader, writer, peer, clog, task)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            clog.debug("control_connection_lost", error=repr(exc))
        except asyncio.CancelledError:
            pass  # close() ends the connection; the server itself goes on shutting down
        except Exception:  # the last line of defence: one connection's bug must not reach the loop
            clog.exception("control_connection_failed")
        finally:
            self._connections.pop(task, None)
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
                pass

    async def _full_house(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection over the limit: within the reserve it may still ask `health` (one line,
        answered, closed), so a full house never locks an operator out; anything else is `busy`."""
        response = None
        if not self._closing and self._reserve_in_use < self.options.reserve_connections:
            response = await self._health_only(reader, writer)
        if response is None:
            self.errors_by_code["busy"] += 1
            reason = "the daemon is shutting down" if self._closing else \
                f"too many control connections (limit {self.options.max_connections}); only health is answered"
            response = encode_line(error_response(None, "busy", reason))
        try:
            writer.write(response)
            async with asyncio.timeout(1.0):
                await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        writer.close()

    async def _health_only(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """The answer to one `health` line sent within the reserve timeout, else None."""
        self._reserve_in_use += 1
        try:
            async with asyncio.timeout(self.options.reserve_timeout_s):
                item = await _LineReader(reader, self.options.max_line_bytes).next()
                if not isinstance(item, bytes):
                    return None
                request = parse_request(item, _peer_of(writer))
                return await self._respond(request, log) if request.op == "health" else None
        except (ControlError, OSError, TimeoutError):
            return None
        finally:
            self._reserve_in_use -= 1

    async def _send(self, writer: asyncio.StreamWriter, message: Mapping[str, Any] | bytes) -> None:
        writer.write(message if isinstance(message, bytes) else encode_line(message))
        # Waiting for the client to read keeps our buffer bounded; a stalled client is dropped.
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives just as the
        # drain completes, and close() would then wait out its grace for a stream that never ends.
        async with asyncio.timeout(self.options.write_timeout_s):
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: Peer | None, clog: Any, task: asyncio.Task) -> None:
        lines = _LineReader(reader, self.options.max_line_bytes)
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + self.options.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(idle_until):
                    item = await lines.next()
            except TimeoutError:
                self.errors_by_code["idle_timeout"] += 1
                await self._send(writer, error_response(
                    None, "idle_timeout", f"no request for {self.options.idle_timeout_s:g} s; closing",
                    {"idle_timeout_s": self.options.idle_timeout_s}))
                return
            if item is None:
                return
            if isinstance(item, bytes) and not item.strip():
                continue  # blank lines are ignored (typing noise); they do not keep a connection
            idle_until = loop.time() + self.options.idle_timeout_s
            if isinstance(item, _TooLong):
                self.errors_by_code["line_too_long"] += 1
                await self._send(writer, error_response(
                    None, "line_too_long",
                    f"request line of {item.line_bytes} bytes exceeds the {self.options.max_line_bytes} byte limit",
                    {"limit_bytes": self.options.max_line_bytes, "line_bytes": item.line_bytes}))
                continue
            self.requests_total += 1
            try:
                request = parse_request(item, peer)
            except ControlError as exc:
                self.errors_by_code[exc.code] += 1
                clog.debug("control_bad_request", code=exc.code, message=exc.message)
                await self._send(writer, exc.response())
                continue
            self._connections[task] = "busy"
            if request.op == "subscribe":
                self._connections[task] = "stream"
                await self._stream(request, lines, writer, clog)
                return
            response = await self._respond(request, clog)
            self._connections[task] = "idle"
            await self._send(writer, response)
            if self._closing:
                return  # answered the request close() was waiting for; take no new ones

    async def _call(self, request: Request, clog: Any) -> Any:
        """The handler's answer, or a ControlError standing for whatever it raised."""
        try:
            return await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            mapped = error_from_exception(exc)
            if mapped is not None:
                return mapped
            return self._internal(request, clog, "handler_failed", exc)

    def _internal(self, request: Request, clog: Any, what: str, exc: BaseException | None) -> ControlError:
        # The traceback goes to the log under an id the client can quote; never to the client.
        error_id = uuid.uuid4().hex[:12]
        clog.error("control_" + what, op=request.op, request_id=repr(request.id)[:100], error_id=error_id,
                   exc_info=exc)
        return ControlError("internal", "internal error while handling the request; see the daemon log",
                            {"error_id": error_id})

    async def _respond(self, request: Request, clog: Any) -> bytes:
        result = await self._call(request, clog)
        if not isinstance(result, (ControlError, Mapping)):
            result = self._internal(request, clog, "bad_result",
                                    TypeError(f"handler returned {type(result).__name__}"))
        try:
            if isinstance(result, ControlError):
                self.errors_by_code[result.code] += 1
                return encode_line(result.response(request.id))
            return encode_line(ok_response(request.id, result))
        except (TypeError, ValueError) as exc:  # a result or error detail that is not JSON
            self.errors_by_code["internal"] += 1
            return encode_line(self._internal(request, clog, "bad_result", exc).response(request.id))

    async def _stream(self, request: Request, lines: _LineReader, writer: asyncio.StreamWriter,
                      clog: Any) -> None:
        """Serve a subscription until the client leaves, the events end, or the server closes."""
        events = await self._call(request, clog)
        if isinstance(events, ControlError):
            self.errors_by_code[events.code] += 1
            await self._send(writer, events.response(request.id))
            return
        if not hasattr(events, "__aiter__"):
            self.errors_by_code["internal"] += 1
            error = self._internal(request, clog, "bad_result", TypeError("subscribe handler gave no async iterator"))
            await self._send(writer, error.response(request.id))
            return
        await self._send(writer, ok_response(request.id, {"subscribed": True, **request.args}))
        stream = _Subscription(events, self.options.subscriber_queue)
        pump = asyncio.create_task(stream.pump(), name="control-subscribe-pump")
        leave = asyncio.create_task(_until_eof(lines), name="control-subscribe-eof")
        try:
            while True:
                event = await stream.next(leave)
                if event is None:
                    break
                try:
                    line = encode_line({"id": request.id, "event": dict(event)})
                except (TypeError, ValueError) as exc:
                    clog.error("control_bad_event", error=str(exc))
                    continue
                await self._send(writer, line)
            if stream.error is not None:
                await self._send(writer, self._internal(request, clog, "subscribe_failed",
                                                        stream.error).response(request.id))
        finally:
            for helper in (pump, leave):
                helper.cancel()
            await asyncio.gather(pump, leave, return_exceptions=True)
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    clog.exception("control_subscribe_close_failed")


async def _until_eof(lines: _LineReader) -> None:
    """Consume (and ignore) what a subscriber sends, returning when it disconnects."""
    while await lines.next() is not None:
        pass


class _Subscription:
    """A bounded buffer between an event source and one subscriber: the oldest events drop first."""

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
