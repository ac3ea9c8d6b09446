"""Stage workers: Stop before work, supervision of failing jobs, cancelled slots skipped, task-manager
shutdown, sd_notify."""

from __future__ import annotations

import asyncio
import socket

from vortexd.slot import Slot
from vortexd.stage_worker import Job, StageWorker
from vortexd.sdnotify import Notifier
from vortexd.tasks import TaskManager


def job(slot_id: str, stage: str = "warp") -> Job:
    """A job for a fresh slot record (the recipe is not read by the worker)."""
    return Job(Slot(slot_id, 0, recipe=None), stage)


def test_a_failing_job_fails_only_its_slot_and_the_worker_keeps_serving() -> None:
    """A job that raises reports its error; the next job still runs."""
    outcomes: list[tuple[str, object, str | None]] = []

    async def handler(job: Job) -> str:
        if job.slot_id == "bad":
            raise RuntimeError("boom")
        return f"done {job.slot_id}"

    async def sink(job: Job, result: object, error: BaseException | None) -> None:
        outcomes.append((job.slot_id, result, None if error is None else str(error)))

    async def scenario() -> StageWorker:
        worker = StageWorker("warp", handler, sink)
        runner = asyncio.create_task(worker.run())
        worker.send(job("bad"))
        worker.send(job("good"))
        while len(outcomes) < 2:
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(runner, 2)
        return worker

    worker = asyncio.run(scenario())
    assert outcomes == [("bad", None, "boom"), ("good", "done good", None)]
    assert worker.jobs_failed == 1 and worker.jobs_done == 1


def test_stop_jumps_ahead_of_queued_work() -> None:
    """A Stop sent after work is queued is taken first: no queued job runs."""
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.slot_id)

    async def sink(job: Job, result: object, error: BaseException | None) -> None:
        pass

    async def scenario() -> None:
        worker = StageWorker("warp", handler, sink)
        worker.send(job("a"))
        worker.send(job("b"))
        worker.stop()
        await asyncio.wait_for(worker.run(), 2)

    asyncio.run(scenario())
    assert ran == []


def test_a_queued_job_of_a_cancelled_slot_never_runs() -> None:
    """A slot cancelled after its job was queued is reported as interrupted, never run."""
    ran: list[str] = []
    reported: list[tuple[str, bool]] = []

    async def handler(job: Job) -> None:
        ran.append(job.slot_id)
        await asyncio.sleep(0.05)

    async def sink(job: Job, result: object, error: BaseException | None) -> None:
        reported.append((job.slot_id, error is not None))

    async def scenario() -> None:
        worker = StageWorker("tts", handler, sink)
        worker.send(job("a"))
        cancelled = job("b")
        worker.send(cancelled)
        cancelled.slot.cancel.set()
        runner = asyncio.create_task(worker.run())
        while len(reported) < 2:
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(runner, 2)

    asyncio.run(scenario())
    assert ran == ["a"] and reported == [("a", False), ("b", True)]


def test_task_manager_cancels_everything_and_names_stragglers() -> None:
    """shutdown() cancels all tasks and returns the names of those that ignore cancellation."""

    async def obedient() -> None:
        await asyncio.sleep(60)

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue

    async def scenario() -> list[str]:
        manager = TaskManager()
        manager.spawn(obedient(), "obedient")
        manager.spawn(stubborn(), "stubborn")
        await asyncio.sleep(0)
        return await manager.shutdown(timeout_s=0.2)

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == ["stubborn"]
    finally:
        for task in asyncio.all_tasks(loop):
            task.get_coro().close()
        loop.close()


def test_notifier_sends_ready_and_watchdog_datagrams(tmp_path) -> None:
    """With NOTIFY_SOCKET set, ready() and watchdog() arrive as sd_notify datagrams."""
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(2)
    notifier = Notifier(path)
    notifier.ready("serving")
    notifier.watchdog()
    first = receiver.recv(4096).decode()
    assert "READY=1" in first and "STATUS=serving" in first
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert not Notifier("").enabled


def test_notifier_never_blocks_when_nobody_reads(tmp_path) -> None:
    """A full notify queue drops pings instead of blocking the daemon's event loop."""
    import time

    path = str(tmp_path / "full.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    notifier = Notifier(path)
    started = time.monotonic()
    for _ in range(5000):
        notifier.watchdog()
    assert time.monotonic() - started < 2.0


def test_a_failing_result_sink_does_not_kill_the_worker() -> None:
    """If reporting an outcome raises, the worker logs it and still runs the next job."""
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.slot_id)

    async def sink(job: Job, result: object, error: BaseException | None) -> None:
        if job.slot_id == "first":
            raise RuntimeError("sink broke")

    async def scenario() -> None:
        worker = StageWorker("finish", handler, sink)
        runner = asyncio.create_task(worker.run())
        worker.send(job("first"))
        worker.send(job("second"))
        while len(ran) < 2:
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(runner, 2)

    asyncio.run(scenario())
    assert ran == ["first", "second"]
