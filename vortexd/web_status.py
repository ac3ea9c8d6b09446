"""The operator page's status document (`/api/status`), built from what the daemon already has.

The daemon's status source calls `page_status` on its event loop (see `vortexd.web.on_loop`) with
its pending slots as `ops.slot_view` gives them, its arena table as `ops.arena_status` gives it,
and its channel's `stats()` and `state.window`. Nothing here imports the engine or the channel:
the inputs are plain dicts and the channel's own immutable records, read by attribute.

Times leave as "seconds from now" (negative: past), so the page needs no clock of its own and
the engine's monotonic times and the channel's wall-clock air times never mix on the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RECENT_MISSES = 20
"""Misses listed at most (newest first): the page shows recent trouble, not history."""


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def slot_row(view: Mapping[str, Any], now_s: float) -> dict[str, Any]:
    """One timeline row from an `ops.slot_view` dict (engine times, read at engine time `now_s`).

    The slack is the published slack once there is one, else the deadline minus the scheduler's
    predicted publish time (negative: the slot is heading for a miss), else None.
    """
    slack = view.get("deadline_slack_s")
    predicted = view.get("predicted_publish_s")
    if slack is None and predicted is not None:
        slack = view["deadline_s"] - predicted
    return {"slot_id": view["slot_id"], "state": view["state"], "running_stage": view.get("running_stage"),
            "late": bool(view.get("late")), "air_in_s": _rounded(view["air_s"] - now_s),
            "deadline_in_s": _rounded(view["deadline_s"] - now_s), "deadline_slack_s": _rounded(slack),
            "filler": False}


def _aired_row(entry: Any, wall_now_s: float) -> dict[str, Any]:
    return {"slot_id": entry.slot_id, "filler": bool(entry.filler), "state": "on air",
            "air_in_s": _rounded(entry.air_time_s - wall_now_s), "deadline_slack_s": None}


def page_status(*, phase: str, slot_views: Iterable[Mapping[str, Any]], now_s: float,
                arena: Mapping[str, Any], channel_stats: Any = None, channel_window: Sequence[Any] = (),
                wall_now_s: float | None = None,
                misses: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The document `/api/status` serves (its keys are described in `vortexd.web`).

    `slot_views`: the pending slots (`ops.slot_view` dicts) read at engine time `now_s`;
    `channel_stats` / `channel_window`: `Channel.stats(wall_now_s)` and `Channel.state.window`
    (None / () before the channel exists); `misses`: the daemon's own recent missed slots
    ({slot_id, air_in_s, reason}), listed before the channel's filler airings.
    """
    rows = sorted((slot_row(view, now_s) for view in slot_views), key=lambda row: row["air_in_s"])
    on_air = next_up = None
    document: dict[str, Any] = {"phase": phase, "slots": rows, "arena": dict(arena)}
    if channel_stats is not None:
        if wall_now_s is None:
            raise ValueError("wall_now_s is needed to place the channel's air times")
        if channel_stats.on_air is not None:
            on_air = _aired_row(channel_stats.on_air, wall_now_s)
        ready = channel_stats.next_ready_slot
        next_up = next((row for row in rows if row["slot_id"] == ready), None) if ready else None
        if next_up is None:
            # Nothing ready for the next air time yet: the filler airs then unless a slot lands.
            next_up = {"slot_id": ready or "filler", "filler": ready is None,
                       "state": "ready" if ready else "filler unless a slot is ready",
                       "air_in_s": _rounded(channel_stats.next_air_time_s - wall_now_s), "deadline_slack_s": None}
        document["fillers_aired"] = channel_stats.fillers_aired
        document["channel"] = {"window_entries": channel_stats.window_entries,
                               "window_segments": channel_stats.window_segments,
                               "window_s": _rounded(channel_stats.window_duration_s),
                               "slots_aired": channel_stats.slots_aired}
    elif rows:
        next_up = next((row for row in rows if row["air_in_s"] >= 0), None)
    aired_fillers = [{"slot_id": f"air index {entry.index}", "air_in_s": _rounded(entry.air_time_s - wall_now_s),
                      "reason": entry.reason, "filler": True}
                     for entry in reversed(channel_window) if entry.filler] if wall_now_s is not None else []
    document["misses"] = ([{**dict(miss), "filler": bool(miss.get("filler", False))} for miss in misses]
                          + aired_fillers)[:RECENT_MISSES]
    document["on_air"], document["next"] = on_air, next_up
    return document
