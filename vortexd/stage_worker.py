"""Stage workers: one per stage lane, a mailbox with a priority lane, supervision, and the blocking
work in a thread.

A job carries the slot record itself, so a reader follows a slot through `Job(slot, stage)`.
Stop goes in the priority lane and is seen before any queued work. A job whose slot was
cancelled while it waited is reported as interrupted without running. A job that raises fails
only that job: the worker reports it and takes the next one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from vortexd.slot import Slot, Withdrawn

CONTROL_PRIORITY = 0
WORK_PRIORITY = 1


@dataclass(order=True)
class _Envelope:
    priority: int
    order: int
    message: Any = field(compare=False)


@dataclass(frozen=True)
class Job:
    """One stage of one slot, for the worker of that stage."""

    slot: Slot
    stage: str

    @property
    def slot_id(self) -> str:
        """The slot's id (for logs)."""
        return self.slot.slot_id


@dataclass(frozen=True)
class Stop:
    """Control: finish the current job (if any), then stop."""


JobHandler = Callable[[Job], Awaitable[Any]]
ResultSink = Callable[[Job, Any, BaseException | None], Awaitable[None]]


class StageWorker:
    """One stage lane: runs `handler` on jobs one at a time; reports each outcome to `on_result`."""

    def __init__(self, name: str, handler: JobHandler, on_result: ResultSink) -> None:
        self.name = name
        self._handler = handler
        self._on_result = on_result
        self._mailbox: asyncio.PriorityQueue[_Envelope] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self.current: Job | None = None
        self.jobs_done = 0
        self.jobs_failed = 0
        self._log = structlog.get_logger("vortexd.worker").bind(worker=name)

    def send(self, job: Job) -> None:
        """Queue a job behind the other work."""
        self._mailbox.put_nowait(_Envelope(WORK_PRIORITY, next(self._order), job))

    def stop(self) -> None:
        """Ask the worker to stop after its current job, ahead of all queued work."""
        self._mailbox.put_nowait(_Envelope(CONTROL_PRIORITY, next(self._order), Stop()))

    @property
    def queue_depth(self) -> int:
        """Messages waiting in the mailbox."""
        return self._mailbox.qsize()

    async def run(self) -> None:
        """The worker loop: Stop first, then work, until Stop."""
        while True:
            message = (await self._mailbox.get()).message
            if isinstance(message, Stop):
                return
            if message.slot.cancel.is_set():
                await self._report(message, None, Withdrawn(f"{message.stage} of {message.slot_id} cancelled "
                                                            "before it started"))
                continue
            await self._run_job(message)

    async def _report(self, job: Job, result: Any, error: BaseException | None) -> None:
        # The sink's own failure must not kill the worker: it would stop the stage for every slot.
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
        except Exception as exc:  # supervision: the slot's stage fails, the worker lives on
            self.jobs_failed += 1
            self._log.error("job_failed", slot_id=job.slot_id, error=f"{type(exc).__name__}: {exc}")
            await self._report(job, None, exc)
        else:
            self.jobs_done += 1
            await self._report(job, result, None)
        finally:
            self.current = None
