"""The control socket's op table: a thin adapter between the wire and the slot engine.

Each op parses its request into the engine's terms, calls one typed engine operation, and turns
the answer (or the engine's domain error) into the JSON the protocol promises. Status and health
read one engine snapshot. Nothing here decides anything about a slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vortexd.control.protocol import OPS, ControlError, Request, parse_submit
from vortexd.engine import EngineSnapshot, SlotEngine
from vortexd.engine_errors import EngineError, NotServing, SlotAlreadyFinal, UnknownSlot
from vortexd.slot import Slot

_ERROR_CODES: dict[type[EngineError], str] = {NotServing: "draining", UnknownSlot: "not_found",
                                              SlotAlreadyFinal: "conflict"}


def arena_status(arena) -> dict[str, dict[str, Any]]:
    """Each region's kind, budget and use; a model stage's region also its measured peak."""
    peaks = arena.peaks()
    return {region: {"kind": arena.plan.region(region).kind, "budget_bytes": u.budget_bytes,
                     "used_bytes": u.used_bytes, **({"peak_bytes": peaks[region]} if region in peaks else {})}
            for region, u in arena.usage().items()}


@dataclass
class DaemonFacts:
    """What the ops read of the daemon itself (not of its slots): its phase, arena, tasks."""

    phase: Callable[[], str]
    arena: Any
    running_tasks: Callable[[], list[str]]
    loop_lag_s: Callable[[], float]
    metrics_port: Callable[[], int | None]
    started_monotonic_s: float
    voices: Callable[[], dict[str, list[str]]]
    subscribe: Callable[[str | None], Any]
    notify_status: Callable[[str], None]
    channel: Callable[[], dict[str, Any] | None] = lambda: None
    """On air now and next, fillers aired (None without a channel)."""


def slot_view(slot: Slot, predicted_s: float | None) -> dict[str, Any]:
    """One slot's place on the timeline, JSON-ready (what `status` lists as pending)."""
    return {"slot_id": slot.slot_id, "seq": slot.seq, "state": str(slot.state), "air_s": slot.air_s,
            "deadline_s": slot.deadline_s, "late": slot.late, "running_stage": slot.running_stage,
            "holds_slab": slot.holds_slab, "error": slot.error, "published_s": slot.published_s,
            "deadline_slack_s": slot.slack_s, "predicted_publish_s": predicted_s, "attempts": slot.attempts,
            "stage_durations_s": dict(slot.durations_s)}


def pending_views(snapshot: EngineSnapshot) -> list[dict[str, Any]]:
    """The views of the slots not final yet (what `status` and the operator page list)."""
    return [slot_view(s, snapshot.predicted_publish_s.get(s.slot_id)) for s in snapshot.slots if not s.terminal]


class ControlOps:
    """Dispatches each request through an explicit table, one entry per protocol op."""

    def __init__(self, engine: SlotEngine, daemon: DaemonFacts) -> None:
        self.engine, self.daemon = engine, daemon
        self._table: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "submit": self._submit, "status": self._status, "slots": self._slots, "cancel": self._cancel,
            "drain": self._drain, "resume": self._resume, "health": self._health, "voices": self._voices,
            "subscribe": self._subscribe,
        }
        assert set(self._table) == set(OPS), "every protocol op needs exactly one handler"

    async def handle(self, request: Request) -> Any:
        """The answer to one request (an async iterator of events for `subscribe`)."""
        try:
            return await self._table[request.op](request.args)
        except EngineError as exc:
            raise ControlError(_ERROR_CODES.get(type(exc), "conflict"), exc.message, exc.details) from None

    async def _submit(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.engine.accepting:  # before parsing: a draining daemon reads no files
            raise NotServing("the daemon is not serving (starting or draining); submit again later")
        recipe = parse_submit(args, self.engine.settings.allowed_roots)
        receipt = await self.engine.submit(recipe)
        answer = {"slot_id": receipt.slot_id, "seq": receipt.seq, "state": receipt.state,
                  "duplicate": receipt.duplicate}
        if not receipt.duplicate:
            answer |= {"air_in_s": receipt.air_in_s, "deadline_in_s": receipt.deadline_in_s}
        return answer

    async def _cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        state, interrupted = await self.engine.cancel(args["slot_id"], args.get("reason"))
        return {"slot_id": args["slot_id"], "state": state, "interrupted_stage": interrupted}

    async def _slots(self, args: dict[str, Any]) -> dict[str, Any]:
        rows = await asyncio.to_thread(self.engine.journal.list, limit=args.get("limit", 100),
                                       states=args.get("states"))
        return {"slots": [row.summary() for row in rows]}

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        snapshot = self.engine.snapshot()
        slot_id = args.get("slot_id")
        if slot_id is not None:
            row = await asyncio.to_thread(self.engine.slot_row, slot_id)
            return self._slot_status(row, snapshot)
        stats = snapshot.stats
        daemon = self.daemon
        return {"phase": daemon.phase(), "draining": snapshot.draining,
                "queue_depth": sum(not s.terminal for s in snapshot.slots),
                "warping": next((s.slot_id for s in snapshot.slots if s.running_stage == "warp"), None),
                "slabs": {"count": snapshot.slab_count, "in_use": sum(s.holds_slab for s in snapshot.slots)},
                "stats": {k: getattr(stats, k) for k in stats.__dataclass_fields__},
                "cadence_s": self.engine.settings.cadence_s,
                "pending": pending_views(snapshot),
                "channel": daemon.channel(),
                "arena": arena_status(daemon.arena), "metrics_port": daemon.metrics_port(),
                "uptime_s": round(time.monotonic() - daemon.started_monotonic_s, 1)}

    @staticmethod
    def _slot_status(row, snapshot: EngineSnapshot) -> dict[str, Any]:
        summary = row.summary()
        slot = next((s for s in snapshot.slots if s.slot_id == row.slot_id), None)
        if slot is not None:  # the engine forgets old final slots; the journal keeps them
            summary["schedule"] = slot_view(slot, snapshot.predicted_publish_s.get(row.slot_id))
        return summary

    async def _drain(self, args: dict[str, Any]) -> dict[str, Any]:
        self.engine.drain()
        self.daemon.notify_status("drained: no new slots start")
        return {"draining": True}

    async def _resume(self, args: dict[str, Any]) -> dict[str, Any]:
        self.engine.resume()
        self.daemon.notify_status("serving")
        return {"draining": self.engine.draining}

    async def _health(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        running = daemon.running_tasks()
        lanes = self.engine.snapshot().lanes
        workers = {name: {"alive": f"worker:{name}" in running, **lane} for name, lane in lanes.items()}
        phase = daemon.phase()
        healthy = phase == "serving" and all(w["alive"] for w in workers.values()) and "scheduler" in running
        return {"healthy": healthy, "phase": phase, "loop_lag_s": round(daemon.loop_lag_s(), 4),
                "workers": workers, "tasks": running}

    async def _voices(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"voices": await asyncio.to_thread(self.daemon.voices)}

    async def _subscribe(self, args: dict[str, Any]):
        return self.daemon.subscribe(args.get("slot_id"))
