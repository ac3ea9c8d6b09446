"""One owner for every asyncio task the daemon starts: named, cancellable, reported at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("vortexd.tasks")


class TaskManager:
    """Creates every long-lived task, logs the ones that die, and cancels leftovers on shutdown."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task, str] = {}

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Start `coro` as a task named `name`; an unexpected exception is logged, not lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = name
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        name = self._tasks.pop(task, task.get_name())
        if not task.cancelled() and task.exception() is not None:
            log.error("task_died", task=name, error=repr(task.exception()))

    @property
    def running(self) -> list[str]:
        """Names of the tasks still running."""
        return sorted(self._tasks.values())

    async def shutdown(self, timeout_s: float) -> list[str]:
        """Cancel every task, wait up to `timeout_s`, and return the names that would not stop."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        leftovers = sorted(t.get_name() for t in pending)
        if leftovers:
            log.warning("tasks_left_running", tasks=leftovers)
        return leftovers
