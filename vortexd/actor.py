"""Stage actors: a mailbox with a priority lane, supervision, and blocking work in a thread.

Control messages (cancel, stop) go in the priority lane and are seen before any queued work, so
an operator never waits behind a 45 s render. A job that raises fails only that job: the actor
reports it and takes the next one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

CONTROL_PRIORITY = 0
WORK_PRIORITY = 1


@dataclass(order=True)
class _Envelope:
    priority: int
    order: int
    message: Any = field(compare=False)


@dataclass(frozen=True)
class Job:
    """A unit of work for an actor: a slot id and the argument of the actor's handler."""

    slot_id: str
    payload: Any = None


@dataclass(frozen=True)
class Stop:
    """Control: finish the current job (if any), then stop."""


@dataclass(frozen=True)
class Cancel:
    """Control: drop any queued job of this slot and ask a running one to stop."""

    slot_id: str


JobHandler = Callable[[Job], Awaitable[Any]]
ResultSink = Callable[[Job, Any, BaseException | None], Awaitable[None]]


class StageActor:
    """One stage: runs `handler` on jobs one at a time; reports each outcome to `on_result`."""

    def __init__(self, name: str, handler: JobHandler, on_result: ResultSink) -> None:
        self.name = name
        self._handler = handler
        self._on_result = on_result
        self._mailbox: asyncio.PriorityQueue[_Envelope] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._cancelled: set[str] = set()
        self.current: Job | None = None
        self.jobs_done = 0
        self.jobs_failed = 0
        self._log = structlog.get_logger("vortexd.actor").bind(actor=name)

    def send(self, job: Job) -> None:
        """Queue a job behind the other work."""
        self._cancelled.discard(job.slot_id)
        self._mailbox.put_nowait(_Envelope(WORK_PRIORITY, next(self._order), job))

    def control(self, message: Stop | Cancel) -> None:
        """Deliver a control message ahead of all queued work."""
        if isinstance(message, Cancel):
            # Recorded at once so a running job's should_stop() sees it without waiting its turn.
            self._cancelled.add(message.slot_id)
        self._mailbox.put_nowait(_Envelope(CONTROL_PRIORITY, next(self._order), message))

    def is_cancelled(self, slot_id: str) -> bool:
        """Whether a Cancel for `slot_id` arrived (running jobs poll this between chunks)."""
        return slot_id in self._cancelled

    @property
    def queue_depth(self) -> int:
        """Messages waiting in the mailbox."""
        return self._mailbox.qsize()

    async def run(self) -> None:
        """The actor loop: control first, then work, until Stop."""
        while True:
            envelope = await self._mailbox.get()
            message = envelope.message
            if isinstance(message, Stop):
                return
            if isinstance(message, Cancel):
                continue
            if message.slot_id in self._cancelled:
                await self._report(message, None, asyncio.CancelledError(f"{message.slot_id} cancelled"))
                continue
            await self._run_job(message)

    async def _report(self, job: Job, result: Any, error: BaseException | None) -> None:
        # The sink's own failure must not kill the actor: it would stop the stage for every slot.
        try:
            await self._on_result(job, result, error)
        except Exception as exc:
            self._log.error("result_sink_failed", slot_id=job.slot_id, error=f"{type(exc).__name__}: {exc}")

    async def _run_job(self, job: Job) -> None:
        self.current = job
        # Bound in the context, so every log line of this job (threads included: to_thread copies
        # the context) carries the slot id.
        try:
            with structlog.contextvars.bound_contextvars(slot_id=job.slot_id, stage=self.name):
                result = await self._handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # supervision: the slot fails, the actor lives on
            self.jobs_failed += 1
            self._log.error("job_failed", slot_id=job.slot_id, error=f"{type(exc).__name__}: {exc}")
            await self._report(job, None, exc)
        else:
            self.jobs_done += 1
            await self._report(job, result, None)
        finally:
            self.current = None
