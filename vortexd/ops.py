"""The control socket's op table: a thin adapter from validated requests to the slot engine's
operations (submit, status, slots, cancel, drain, resume) and to the daemon's own questions
(health, voices, subscribe). Each returns a JSON-ready dict, or raises an error the server turns
into a structured response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from vortexd.control.protocol import OPS, Request

if TYPE_CHECKING:
    from vortexd.daemon import Daemon


def arena_status(arena) -> dict[str, dict[str, Any]]:
    """Each region's kind, budget and use; a model stage's region also its measured peak."""
    peaks = arena.peaks()
    return {region: {"kind": arena.plan.region(region).kind, "budget_bytes": u.budget_bytes,
                     "used_bytes": u.used_bytes, **({"peak_bytes": peaks[region]} if region in peaks else {})}
            for region, u in arena.usage().items()}


class ControlOps:
    """Dispatches each request through an explicit table, one entry per protocol op."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        engine = daemon.engine
        self._table: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "submit": engine.submit, "status": self._status, "slots": engine.slots, "cancel": engine.cancel,
            "drain": self._drain, "resume": self._resume, "health": self._health, "voices": self._voices,
            "subscribe": self._subscribe,
        }
        assert set(self._table) == set(OPS), "every protocol op needs exactly one handler"

    async def handle(self, request: Request) -> Any:
        """The answer to one request (an async iterator of events for `subscribe`)."""
        return await self._table[request.op](request.args)

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        status = await self.daemon.engine.status(args)
        if args.get("slot_id") is not None:
            return status
        daemon = self.daemon
        return {"phase": daemon.phase, **status,
                "arena": arena_status(daemon.arena),
                "metrics_port": daemon.metrics_port,
                "uptime_s": round(time.monotonic() - daemon.started_monotonic_s, 1)}

    async def _drain(self, args: dict[str, Any]) -> dict[str, Any]:
        self.daemon.engine.drain()
        self.daemon.notifier.status("drained: no new slots start")
        return {"draining": True}

    async def _resume(self, args: dict[str, Any]) -> dict[str, Any]:
        self.daemon.engine.resume()
        self.daemon.notifier.status("serving")
        return {"draining": False}

    async def _health(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        actors = {name: {"alive": f"actor:{name}" in daemon.tasks.running,
                         "current": actor.current.slot_id if actor.current else None,
                         "queued": actor.queue_depth, "done": actor.jobs_done, "failed": actor.jobs_failed}
                  for name, actor in daemon.actors.items()}
        healthy = (daemon.phase == "serving" and all(a["alive"] for a in actors.values())
                   and "scheduler" in daemon.tasks.running)
        return {"healthy": healthy, "phase": daemon.phase, "loop_lag_s": round(daemon.loop_lag_s, 4),
                "actors": actors, "tasks": daemon.tasks.running}

    async def _voices(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"voices": await asyncio.to_thread(self.daemon.backends.voices)}

    async def _subscribe(self, args: dict[str, Any]):
        return self.daemon.events.subscribe(args.get("slot_id"))
