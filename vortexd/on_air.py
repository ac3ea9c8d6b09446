"""The daemon's channel on air: the air grid, the filler, published slots handed to the channel,
and the playout loop.

The channel (vortexd/channel.py) airs index k at `t0 + cadence·k` in wall-clock time. That grid
is fixed for the channel's life (kept in `<channel_dir>/air_grid.json`, so a restart airs at the
same times) and given to the scheduler as its air grid: every slot's air time is one of the
channel's, and a slot published before its air time airs exactly then. A slot not ready at its
air time is replaced by the filler, rendered once at start-up.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import structlog

from vortexd.channel import Channel, ChannelOptions, Schedule
from vortexd.channel_state import write_atomic
from vortexd.metrics import Metrics
from vortexd.settings import Settings

log = structlog.get_logger("vortexd.on_air")

GRID_NAME = "air_grid.json"
_MAX_SLEEP_S = 1.0
"""Longest the playout loop sleeps: a newly published slot or a clock step is seen within it."""


def channel_dir(settings: Settings) -> Path:
    """The channel's folder (settings.channel_dir, or `<output_dir>/channel`)."""
    return settings.channel_dir or settings.output_dir / "channel"


def air_grid_t0(folder: Path, cadence_s: float, now_wall_s: float) -> float:
    """The wall-clock t0 of the channel's air grid: the one kept in `folder`, or — the first time,
    or when the cadence changed — the next whole multiple of the cadence, kept from now on."""
    path = folder / GRID_NAME
    try:
        kept = json.loads(path.read_text())
        if kept.get("cadence_s") == cadence_s and math.isfinite(kept["t0_wall_s"]):
            return float(kept["t0_wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no grid yet (or an unreadable one): start a new one
    t0_wall_s = math.ceil(now_wall_s / cadence_s) * cadence_s
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"t0_wall_s": t0_wall_s, "cadence_s": cadence_s}).encode())
    return t0_wall_s


class OnAir:
    """The channel of one daemon (see the module docstring). Blocking channel work runs in a
    thread; everything else on the event loop."""

    def __init__(self, settings: Settings, filler_hls: Path, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        folder = channel_dir(settings)
        self.t0_wall_s = air_grid_t0(folder, settings.cadence_s, time.time())
        self.channel = Channel(folder, filler_hls, Schedule(self.t0_wall_s, settings.cadence_s),
                               ChannelOptions(window_slots=settings.channel_window_slots))
        self._lock = asyncio.Lock()

    def grid_t0_monotonic_s(self) -> float:
        """The air grid's t0 on the scheduler's (monotonic) clock."""
        return self.t0_wall_s - (time.time() - time.monotonic())

    def index_of(self, air_monotonic_s: float) -> int:
        """The channel's air index of a slot airing at `air_monotonic_s` (on the grid)."""
        air_wall_s = air_monotonic_s + (time.time() - time.monotonic())
        return round((air_wall_s - self.t0_wall_s) / self.settings.cadence_s)

    async def slot_published(self, slot_id: str, air_monotonic_s: float, slot_dir: Path) -> None:
        """Hand a published slot to the channel for its air time."""
        index = self.index_of(air_monotonic_s)
        async with self._lock:
            try:
                await asyncio.to_thread(self.channel.slot_ready, index, slot_id, slot_dir / "hls")
            except (OSError, ValueError) as exc:  # the filler airs instead: the channel never stalls
                log.error("channel.slot_refused", slot_id=slot_id, index=index, error=str(exc))

    async def run(self) -> None:
        """The playout loop: tick the channel when something is due, keep its gauges current."""
        while True:
            async with self._lock:
                await asyncio.to_thread(self.channel.tick)
                stats = self.channel.stats()
                wake_s = self.channel.next_wakeup_s()
            self.metrics.set_channel(stats.fillers_aired, stats.window_duration_s, stats.window_segments)
            await asyncio.sleep(min(_MAX_SLEEP_S, max(0.0, wake_s - time.time())))

    def status(self) -> dict[str, Any]:
        """On air now and next, and the channel's counters (for `vortexctl status` and the page)."""
        stats = self.channel.stats()
        on_air = stats.on_air
        return {"playlist": str(self.channel.playlist_path), "fillers_aired": stats.fillers_aired,
                "slots_aired": stats.slots_aired, "window_segments": stats.window_segments,
                "window_duration_s": round(stats.window_duration_s, 3),
                "on_air": None if on_air is None else {"slot_id": on_air.slot_id, "index": on_air.index,
                                                       "filler": on_air.filler},
                "next": {"index": stats.next_index, "air_in_s": round(stats.next_air_time_s - time.time(), 3),
                         "slot_id": stats.next_ready_slot}}
