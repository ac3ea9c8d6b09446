"""The control-socket operations of a running daemon: submit, status, slots, cancel, drain,
resume, health, subscribe. Each takes a validated `Request` and returns a JSON-ready dict (or
raises an error the server turns into a structured response)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vortexd.actor import Cancel
from vortexd.control.protocol import OPS, ControlError, Request
from vortexd.recipe import parse_recipe
from vortexd.slot_state import TERMINAL_STATES, SlotState
from vortexd.spool import snapshot_inputs

if TYPE_CHECKING:
    from vortexd.daemon import Daemon


class ControlOps:
    """Dispatches requests to the daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._table: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "submit": self._op_submit, "status": self._op_status, "slots": self._op_slots,
            "cancel": self._op_cancel, "drain": self._op_drain, "resume": self._op_resume,
            "health": self._op_health, "voices": self._op_voices, "subscribe": self._op_subscribe,
        }
        assert set(self._table) == set(OPS), "every protocol op needs exactly one handler"

    async def handle(self, request: Request) -> Any:
        """The answer to one request (an async iterator of events for `subscribe`)."""
        return await self._table[request.op](request.args)

    async def _op_submit(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        if daemon.phase in ("draining", "starting"):
            raise ControlError("draining", f"the daemon is {daemon.phase}; submit again once it is serving")
        roots = [Path(root).resolve() for root in daemon.settings.allowed_roots]
        base_dir = Path(args["base_dir"]).resolve() if args.get("base_dir") else None
        if base_dir is not None and not any(base_dir.is_relative_to(root) for root in roots):
            base_dir = None  # an untrusted folder: only absolute paths inside the roots will do
        recipe = parse_recipe(args["recipe"], base_dir, roots)
        if recipe.output.n_frames > daemon.settings.max_slot_frames:
            raise ControlError("invalid_recipe", f"output.duration_s: {recipe.output.n_frames} frames do not fit "
                               f"a video slab of {daemon.settings.max_slot_frames} frames",
                               {"field": "output.duration_s", "max_frames": daemon.settings.max_slot_frames})
        # Read, check and copy the input files now: a bad or swapped file is refused here, never
        # accepted and then failed at prepare time.
        file_roots = [*([base_dir] if base_dir is not None else []), *roots]
        recipe, _ = await asyncio.to_thread(snapshot_inputs, recipe, file_roots, daemon.spool_dir)
        recipe_json = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)
        # Committed to disk before the answer: an acknowledged recipe survives kill -9.
        seq = await asyncio.to_thread(daemon.journal.accept, recipe.slot_id, recipe_json, recipe.content_hash())
        if recipe.slot_id in daemon.work or daemon.journal.get(recipe.slot_id).state != SlotState.QUEUED:
            record = daemon.journal.get(recipe.slot_id)
            return {"slot_id": recipe.slot_id, "seq": seq, "state": record.state, "duplicate": True}
        from vortexd.slot_work import SlotWork

        daemon.work[recipe.slot_id] = SlotWork(recipe=recipe, seq=seq)
        view = daemon.scheduler.submit(recipe.slot_id, seq, daemon.clock.now_s())
        daemon.events.publish(recipe.slot_id, "state", state="queued", error=None)
        daemon.wake()
        return {"slot_id": recipe.slot_id, "seq": seq, "state": "queued", "duplicate": False,
                "air_in_s": round(view.air_s - daemon.clock.now_s(), 3),
                "deadline_in_s": round(view.deadline_s - daemon.clock.now_s(), 3)}

    async def _op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        slot_id = args.get("slot_id")
        if slot_id is not None:
            record = daemon.journal.get(slot_id)
            if record is None:
                raise ControlError("not_found", f"no slot {slot_id!r}", {"slot_id": slot_id})
            summary = record.summary()
            try:
                summary["schedule"] = daemon.scheduler.slot(slot_id).to_dict()
            except (KeyError, ValueError, LookupError):
                pass
            return summary
        snapshot = daemon.scheduler.snapshot()
        stats = snapshot.stats
        return {
            "phase": daemon.phase, "draining": snapshot.draining, "queue_depth": snapshot.queue_depth,
            "warping": snapshot.warping_slot_id, "slabs": {"count": snapshot.slab_count, "in_use": snapshot.slabs_in_use},
            "stats": {k: getattr(stats, k) for k in stats.__dataclass_fields__},
            "arena": {region: {"budget_bytes": u.budget_bytes, "used_bytes": u.used_bytes}
                      for region, u in daemon.arena.usage().items()},
            "cadence_s": daemon.settings.cadence_s, "metrics_port": daemon.metrics_port,
            "uptime_s": round(time.monotonic() - daemon.started_monotonic_s, 1),
            "pending": [v.to_dict() for v in snapshot.slots if v.state not in TERMINAL_STATES],
        }

    async def _op_slots(self, args: dict[str, Any]) -> dict[str, Any]:
        records = self.daemon.journal.list(limit=args.get("limit", 100), states=args.get("states"))
        return {"slots": [record.summary() for record in records]}

    async def _op_cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        slot_id = args["slot_id"]
        record = daemon.journal.get(slot_id)
        if record is None:
            raise ControlError("not_found", f"no slot {slot_id!r}", {"slot_id": slot_id})
        if record.terminal:
            raise ControlError("conflict", f"slot {slot_id!r} is already {record.state}",
                               {"slot_id": slot_id, "state": record.state})
        running = daemon.scheduler.cancel(slot_id, daemon.clock.now_s())
        if running is not None:
            daemon.actors[running].control(Cancel(slot_id))
        else:
            daemon.forget(slot_id)
        await daemon.record_state(slot_id, SlotState.CANCELLED, error=args.get("reason"))
        daemon.metrics.count_slot("cancelled")
        daemon.wake()
        return {"slot_id": slot_id, "state": "cancelled", "interrupted_stage": running}

    async def _op_drain(self, args: dict[str, Any]) -> dict[str, Any]:
        self.daemon.scheduler.drain()
        self.daemon.notifier.status("drained: no new slots start")
        return {"draining": True}

    async def _op_resume(self, args: dict[str, Any]) -> dict[str, Any]:
        self.daemon.scheduler.resume()
        self.daemon.notifier.status("serving")
        self.daemon.wake()
        return {"draining": False}

    async def _op_health(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        actors = {name: {"alive": f"actor:{name}" in daemon.tasks.running,
                         "current": actor.current.slot_id if actor.current else None,
                         "queued": actor.queue_depth, "done": actor.jobs_done, "failed": actor.jobs_failed}
                  for name, actor in daemon.actors.items()}
        healthy = (daemon.phase == "serving" and all(a["alive"] for a in actors.values())
                   and "scheduler" in daemon.tasks.running)
        return {"healthy": healthy, "phase": daemon.phase, "loop_lag_s": round(daemon.loop_lag_s, 4),
                "actors": actors, "tasks": daemon.tasks.running}

    async def _op_voices(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"voices": await asyncio.to_thread(self.daemon.backends.voices)}

    async def _op_subscribe(self, args: dict[str, Any]):
        return self.daemon.events.subscribe(args.get("slot_id"))

