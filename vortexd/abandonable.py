"""Blocking work a stopping daemon may walk away from: checking a submit's input files.

Checking a long driving clip decodes and tracks every frame (tens of seconds) and cannot be
interrupted part-way. In asyncio's default executor such a check would hold the daemon's exit
until it ends: the loop's shutdown and the interpreter's exit both join those threads. Here each
call runs in a daemon thread of its own, counted while it runs, so `serve` can tell that a check
is still going and end the process without waiting for it (its staging folder in the spool is
swept at the next start).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_running = 0


def running() -> int:
    """How many abandonable calls are still running (in any thread)."""
    with _lock:
        return _running


async def run_abandonable(call: Callable[[], T], name: str = "abandonable") -> T:
    """`call()` in a daemon thread; its result or exception. Cancelling the await abandons the
    call: it runs to its end in its thread and its result is dropped."""
    global _running
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the awaiting submit was cancelled (client gone, daemon stopping)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def body() -> None:
        global _running
        result, error = None, None
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting coroutine, raised there
            error = exc
        finally:
            with _lock:
                _running -= 1
        try:
            loop.call_soon_threadsafe(deliver, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for this result any more

    with _lock:
        _running += 1
    try:
        threading.Thread(target=body, name=name, daemon=True).start()
    except BaseException:
        with _lock:
            _running -= 1
        raise
    return await future
