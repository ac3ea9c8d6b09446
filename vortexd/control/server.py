"""The control socket server: JSON lines over a Unix socket, hostile input contained per line.

Every line gets exactly one response (blank lines are ignored, and a connection that sends no
request for `idle_timeout_s` is told so and closed); nothing a client sends can make
the server buffer more than `max_line_bytes` (plus one read chunk), raise out of a connection
task, or block another connection. A `subscribe` request turns its connection into an event
stream fed through a bounded queue, so a slow or stalled subscriber loses its oldest events
(and is told how many) instead of holding up the daemon.

No flood locks an operator out of `health`: connections are held within a limit in all and a
limit per process, and a connection over either is still heard (admission.py): its first line
is read, `health` is answered, anything else gets `busy` naming the limit. A request into a
house full of idle connections takes the place of the one idle the longest.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from vortexd.control.admission import Admission, AdmissionLimits, Refusal
from vortexd.control.lines import LineReader, TooLong, until_eof
from vortexd.control.listen import ControlServerError, bind_socket, peer_of
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
from vortexd.control.subscription import Subscription

__all__ = ["ControlServer", "ControlServerError", "ControlServerOptions", "Handler"]

Handler = Callable[[Request], Awaitable["Mapping[str, Any] | AsyncIterator[Mapping[str, Any]]"]]
"""Answers a request: a result mapping, or for `subscribe` an async iterator of event mappings."""

log = structlog.get_logger("vortexd.control")


@dataclass(frozen=True)
class ControlServerOptions:
    """Limits of the control server (the daemon maps its settings onto these)."""

    max_line_bytes: int = MAX_LINE_BYTES
    max_connections: int = 64
    """Connections served at once, from all clients together."""
    max_connections_per_peer: int = 16
    """Connections served at once for one client process (SO_PEERCRED uid and pid), so that one
    client cannot take the house; its extra connections get `busy` naming this limit."""
    subscriber_queue: int = 1024
    """Events buffered per subscriber before the oldest are dropped."""
    write_timeout_s: float = 30.0
    """A client that does not read for this long is disconnected (its socket buffer is full)."""
    close_grace_s: float = 5.0
    """How long `close()` lets requests in progress finish before cancelling them."""
    idle_timeout_s: float = 30.0
    """A connection that sends no request for this long is told so and closed (blank lines do
    not count as requests), so idle clients cannot hold the connection slots."""
    first_line_timeout_s: float = 1.0
    """A connection over a limit has this long to send its one line (`health` is answered)."""
    max_heard: int = 64
    """Connections over a limit whose first line is awaited at once; a newcomer pushes out the
    oldest of the client that has the most, so silent connections cannot hold the way in."""
    max_heard_per_peer: int = 4
    """... and from one client process (its own oldest is pushed out first)."""

    @classmethod
    def from_settings(cls, settings: Any) -> ControlServerOptions:
        """The options a daemon's `vortexd.settings.Settings` give (its `control_*` keys)."""
        return cls(idle_timeout_s=settings.control_idle_timeout_s,
                   max_connections=settings.control_max_connections,
                   max_connections_per_peer=settings.control_max_connections_per_peer,
                   first_line_timeout_s=settings.control_first_line_timeout_s)

    def admission_limits(self) -> AdmissionLimits:
        """The connection limits, for `Admission`."""
        return AdmissionLimits(self.max_connections, self.max_connections_per_peer,
                               self.max_heard, self.max_heard_per_peer)


def _expire_now(deadline: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
    """End a wait at once (a heard connection pushed out by a newer one), unless it already ended:
    a deadline that has just fired cannot be rescheduled."""
    if not deadline.expired():
        deadline.reschedule(loop.time())


class ControlServer:
    """The daemon's control socket. `await start()`, later `await close()` (or `async with`)."""

    def __init__(self, path: Path | str, handler: Handler, mode: int = 0o660,
                 group: str | int | None = None, options: ControlServerOptions | None = None) -> None:
        self.path = Path(path)
        self.mode = mode
        self.group = group
        self.options = options or ControlServerOptions()
        self.admission = Admission(self.options.admission_limits())
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._connections: dict[asyncio.Task, str] = {}  # task -> "idle" | "busy" | "stream" | "heard"
        self._closing = False
        self.requests_total = 0
        self.errors_by_code: Counter[str] = Counter()
        self._refused_unlogged = 0
        self._waiting: dict[asyncio.Task, tuple[float, asyncio.Timeout]] = {}  # served, awaiting a request
        self._made_room: set[asyncio.Task] = set()  # chosen by _make_room, about to be closed
        self._next_refusal_log = 0.0

    @property
    def connection_count(self) -> int:
        """Clients connected right now (served and heard)."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind the socket (mode/group applied before it is reachable) and start accepting."""
        sock = bind_socket(self.path, self.mode, self.group)
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
        peer = peer_of(writer)
        clog = log.bind(peer_pid=peer.pid if peer else None, peer_uid=peer.uid if peer else None)
        if self._closing:
            self.errors_by_code["busy"] += 1
            await self._send_and_close(writer, error_response(None, "busy", "the daemon is shutting down"))
            return
        refusal = self.admission.hold(peer)
        self._connections[task] = "idle" if refusal is None else "heard"
        try:
            if refusal is None:
                await self._serve(LineReader(reader, self.options.max_line_bytes), writer, peer, clog)
            else:
                await self._hear(reader, writer, peer, refusal, clog)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            clog.debug("control_connection_lost", error=repr(exc))
        except asyncio.CancelledError:
            pass  # close() ends the connection; the server itself goes on shutting down
        except Exception:  # the last line of defence: one connection's bug must not reach the loop
            clog.exception("control_connection_failed")
        finally:
            self._connections.pop(task, None)
            self._made_room.discard(task)
            if refusal is None:
                self.admission.release(peer)
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
                pass

    async def _hear(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer | None,
                    refusal: Refusal, clog: Any) -> None:
        """A connection over a limit: its first line is read, so that `health` is answered
        whatever the flood; anything else (or nothing in time) is told `busy`, naming the limit."""
        lines = LineReader(reader, self.options.max_line_bytes)
        item = await self._first_line(lines, peer)
        request = None
        if isinstance(item, bytes):
            try:
                request = parse_request(item, peer)
            except ControlError:
                pass  # a malformed line from a client over its limit gets the same busy answer
        if request is not None and request.op == "health":
            self.requests_total += 1
            await self._send_and_close(writer, await self._respond(request, clog))
            return
        if item is not None and refusal.limit == "max_connections" and await self._make_room():
            if self.admission.hold(peer) is None:  # a request, not silence, may take the room made
                self._connections[asyncio.current_task()] = "idle"  # type: ignore[index]
                try:
                    await self._serve(lines, writer, peer, clog, first=item)
                finally:
                    self.admission.release(peer)
                return
        self.errors_by_code["busy"] += 1
        self._log_refusal(refusal, clog)
        await self._send_and_close(writer, error_response(
            request.id if request else None, "busy", refusal.message(), refusal.details()))

    def _log_refusal(self, refusal: Refusal, clog: Any) -> None:
        """Warn that connections are being refused, at most once per 10 s: a flood must not
        flood the log too, but an operator should see that one is going on and who sends it."""
        self._refused_unlogged += 1
        now = asyncio.get_running_loop().time()
        if now >= self._next_refusal_log:
            clog.warning("control_connections_refused", limit=refusal.limit, value=refusal.value,
                         refused=self._refused_unlogged)
            self._refused_unlogged, self._next_refusal_log = 0, now + 10.0

    async def _make_room(self) -> bool:
        """The house is full and a client sent a request: close the served connection that has
        waited longest for a request (longer than a heard connection may wait), so that idle
        connections, however many processes hold them, cannot keep other clients out."""
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self.options.first_line_timeout_s
        idle = [(since, task) for task, (since, _) in self._waiting.items() if since <= oldest]
        if not idle:
            return False
        victim = min(idle, key=lambda entry: entry[0])[1]
        _, deadline = self._waiting.pop(victim)
        self._made_room.add(victim)
        _expire_now(deadline, loop)
        await asyncio.wait({victim}, timeout=1.0)
        return victim.done()

    async def _first_line(self, lines: LineReader, peer: Peer | None) -> bytes | TooLong | None:
        """The connection's first request line, or None at end of stream, after the first-line
        timeout, or when a newer connection pushes this one out of the heard connections."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.options.first_line_timeout_s) as deadline:
                hearing = self.admission.hear(peer, lambda: _expire_now(deadline, loop))
                try:
                    return await lines.next_request()
                finally:
                    self.admission.done(hearing)
        except TimeoutError:
            return None

    async def _send_and_close(self, writer: asyncio.StreamWriter, message: Mapping[str, Any] | bytes) -> None:
        """One answer to a connection that is then closed; a client that does not read is left."""
        try:
            writer.write(message if isinstance(message, bytes) else encode_line(message))
            async with asyncio.timeout(1.0):
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        writer.close()

    async def _send(self, writer: asyncio.StreamWriter, message: Mapping[str, Any] | bytes) -> None:
        writer.write(message if isinstance(message, bytes) else encode_line(message))
        # Waiting for the client to read keeps our buffer bounded; a stalled client is dropped.
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives just as the
        # drain completes, and close() would then wait out its grace for a stream that never ends.
        async with asyncio.timeout(self.options.write_timeout_s):
            await writer.drain()

    async def _next_request(self, lines: LineReader, task: asyncio.Task, since: float) -> bytes | TooLong | None:
        """The next request line; TimeoutError after the idle timeout, or when `_make_room`
        chose this connection (it is listed as waiting, since `since`, meanwhile)."""
        async with asyncio.timeout_at(since + self.options.idle_timeout_s) as deadline:
            self._waiting[task] = (since, deadline)
            try:
                return await lines.next_request()  # blank lines do not keep a connection
            finally:
                self._waiting.pop(task, None)

    async def _serve(self, lines: LineReader, writer: asyncio.StreamWriter, peer: Peer | None, clog: Any,
                     first: bytes | TooLong | None = None) -> None:
        """Answer requests until the client leaves or idles out (`first`: a line already read)."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        while True:
            if first is None:
                try:  # the idle timeout counts from the last answer, not from the last request
                    item = await self._next_request(lines, task, loop.time())
                except TimeoutError:
                    await self._send(writer, self._idle_timeout(task))
                    return
            else:
                item, first = first, None
            if item is None:
                return
            if isinstance(item, TooLong):
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

    def _idle_timeout(self, task: asyncio.Task) -> dict[str, Any]:
        """The error a connection closed for idling gets (sooner when it made room for another)."""
        self.errors_by_code["idle_timeout"] += 1
        details = {"idle_timeout_s": self.options.idle_timeout_s}
        if task in self._made_room:
            self._made_room.discard(task)
            return error_response(None, "idle_timeout", (
                f"closing to make room: all {self.options.max_connections} connections are taken "
                f"and this one had sent no request for the longest"), {**details, "made_room": True})
        return error_response(None, "idle_timeout", f"no request for {self.options.idle_timeout_s:g} s; closing",
                              details)

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

    async def _stream(self, request: Request, lines: LineReader, writer: asyncio.StreamWriter,
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
        stream = Subscription(events, self.options.subscriber_queue)
        pump = asyncio.create_task(stream.pump(), name="control-subscribe-pump")
        leave = asyncio.create_task(until_eof(lines), name="control-subscribe-eof")
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
