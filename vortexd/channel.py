"""The channel: the node on air, one live HLS playlist that never goes dark.

`Channel` plays the published slots out in air order as `<channel_dir>/live.m3u8`. The daemon
tells it when a slot is published (`slot_ready`) and calls `tick` at (or after) each moment
`next_wakeup_s` names; at each air time something airs — the slot, or the filler when the slot
is not ready. The decisions are `vortexd.channel_plan`'s pure functions; this module does the
files: it hard-links (or copies) each aired slot's init and media segments into a folder of its
own inside the channel folder (so the slot folder may be deleted without breaking the channel),
rewrites the playlist atomically, deletes what left the window after the grace period, and keeps
its state in `channel_state.json` (atomic too), so a restart after `kill -9` continues the media
and discontinuity sequences and never airs an air time twice.

Blocking file I/O: an asyncio caller runs `slot_ready` and `tick` in a worker thread; a lock
serialises them, so the publishing path and the air-time loop may call from different threads.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from stages.durable import fsync_path
from vortexd.channel_plan import (
    Aired,
    ChannelState,
    Decision,
    Media,
    Schedule,
    air,
    decide,
    expire,
    next_wakeup_s,
)
from vortexd.channel_playlist import PlaylistError, parse_vod, render_live, target_duration_of
from vortexd.channel_state import load_state, state_to_json, write_atomic

__all__ = ["PLAYLIST_NAME", "STATE_NAME", "Channel", "ChannelOptions", "ChannelStats", "PlaylistError",
           "Schedule", "TickResult", "load_media"]

log = structlog.get_logger("vortexd.channel")

PLAYLIST_NAME = "live.m3u8"
STATE_NAME = "channel_state.json"
SLOT_PLAYLIST = "index.m3u8"
ENTRY_PREFIX = "air-"
"""Each airing's files live in `air-<ordinal>/`; only names with this prefix (and the hidden
filler copy) are ever created or deleted in the channel folder."""
FILLER_DIR = ".filler"


@dataclass(frozen=True)
class ChannelOptions:
    """How the channel plays out.

    window_slots: entries (slots or fillers) listed in the live playlist.
    grace_s: how long files stay after leaving the window; None = RFC 8216's minimum (the
      playlist's duration when they left plus their longest segment).
    target_duration_s: EXT-X-TARGETDURATION, fixed for the playlist's life (slots whose
      segments round above it are refused).
    filler_id: the name logged and shown for a filler airing.
    """

    window_slots: int = 3
    grace_s: float | None = None
    target_duration_s: int = 2
    filler_id: str = "filler"

    def __post_init__(self) -> None:
        if self.window_slots < 1:
            raise ValueError(f"window_slots must be at least 1, got {self.window_slots}")
        if self.grace_s is not None and self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0 or None, got {self.grace_s}")
        if self.target_duration_s < 1:
            raise ValueError(f"target_duration_s must be at least 1, got {self.target_duration_s}")


@dataclass(frozen=True)
class TickResult:
    """What one `tick` did: the entry it aired (if any), the folders it deleted, and whether it
    rewrote the playlist."""

    aired: Aired | None
    deleted: tuple[str, ...]
    playlist_written: bool


@dataclass(frozen=True)
class ChannelStats:
    """Counters and the window, for metrics, `vortexctl status` and the operator page."""

    slots_aired: int
    fillers_aired: int
    air_times_skipped: int
    window_entries: int
    window_segments: int
    window_duration_s: float
    on_air: Aired | None
    next_index: int
    next_air_time_s: float
    next_ready_slot: str | None


def load_media(hls_dir: Path, target_duration_s: int) -> Media:
    """The media of a finished slot's `hls/` folder, checked so the channel can air it.

    Raises `PlaylistError` when the playlist is not a finished fMP4 VOD, a listed file is
    missing, or a segment is longer than the channel's target duration; OSError when the
    playlist cannot be read.
    """
    media = parse_vod((hls_dir / SLOT_PLAYLIST).read_text())
    missing = [name for name in (media.init, *(s.name for s in media.segments))
               if not (hls_dir / name).is_file()]
    if missing:
        raise PlaylistError(f"{hls_dir} lacks {', '.join(missing[:3])}")
    if target_duration_of(media) > target_duration_s:
        raise PlaylistError(f"{hls_dir} has a segment of {max(s.duration_s for s in media.segments):.3f} s, "
                            f"over the channel's target duration of {target_duration_s} s")
    return media


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        # Another filesystem (EXDEV) or no hard links allowed: a copy keeps the channel whole.
        shutil.copyfile(source, target)


def _place(source_dir: Path, media: Media, target: Path) -> None:
    """Put `media`'s files from `source_dir` into the folder `target`, whole or not at all."""
    temp = target.parent / f".{target.name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    for name in (media.init, *(segment.name for segment in media.segments)):
        _link_or_copy(source_dir / name, temp / name)
    fsync_path(temp)
    # A folder under this name is a leftover of a crash before its airing was recorded.
    shutil.rmtree(target, ignore_errors=True)
    os.rename(temp, target)
    fsync_path(target.parent)


class Channel:
    """The live channel in `channel_dir`, airing slots on `schedule` with `filler_hls` as filler.

    `filler_hls` is a finished slot's `hls/` folder (the last actor idling); it is copied into
    the channel folder at construction, so each filler airing is independent of it afterwards.
    A state file left by an earlier run is resumed. `clock` gives wall-clock seconds (UTC epoch)
    whenever a method is called without an explicit time.
    """

    def __init__(self, channel_dir: Path, filler_hls: Path, schedule: Schedule,
                 options: ChannelOptions | None = None, clock: Callable[[], float] = time.time) -> None:
        self.options = options or ChannelOptions()
        self.schedule = schedule
        self.dir = Path(channel_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        filler = load_media(Path(filler_hls), self.options.target_duration_s)
        _place(Path(filler_hls), filler, self.dir / FILLER_DIR)
        self._filler = filler
        self._state = load_state(self.dir / STATE_NAME)
        self._high_water_s = self._state.last_air_time_s or float("-inf")
        self._last_playlist: str | None = None
        self._lock = threading.Lock()
        self._remove_orphans()
        if self._state.window:
            # The playlist on disk may be older than the state (a crash between the two writes).
            self._write_playlist(self._now(None))

    @property
    def playlist_path(self) -> Path:
        """The live playlist's path, `<channel_dir>/live.m3u8`."""
        return self.dir / PLAYLIST_NAME

    @property
    def state(self) -> ChannelState:
        """The channel's current state (immutable)."""
        return self._state

    def _now(self, now_s: float | None) -> float:
        # The wall clock can step back (NTP, an operator's `date`); the channel's time does not,
        # so a revealed segment is never withdrawn from the playlist.
        self._high_water_s = max(self._high_water_s, self._clock() if now_s is None else now_s)
        return self._high_water_s

    def _save(self) -> None:
        write_atomic(self.dir / STATE_NAME, state_to_json(self._state))

    def _ready_ids(self) -> dict[int, str]:
        return {index: slot_id for index, (slot_id, _) in self._state.ready.items()}

    def slot_ready(self, index: int, slot_id: str, hls_dir: Path) -> bool:
        """Record that the slot for air index `index` is published with its HLS in `hls_dir`.

        Returns False (and logs) when that air time has already passed — the filler aired in its
        place, and a slot never airs late. Raises `PlaylistError`/OSError when `hls_dir` is not
        a finished slot the channel could air. Registrations survive a restart; registering the
        same slot again is harmless.
        """
        load_media(Path(hls_dir), self.options.target_duration_s)
        with self._lock:
            if self._state.last_index is not None and index <= self._state.last_index:
                log.warning("channel.slot_too_late", index=index, slot_id=slot_id,
                            last_aired_index=self._state.last_index)
                return False
            ready = dict(self._state.ready)
            ready[index] = (slot_id, str(Path(hls_dir).resolve()))
            self._state = replace(self._state, ready=ready)
            self._save()
        return True

    def tick(self, now_s: float | None = None) -> TickResult:
        """Do what is due at `now_s`: air the due index (its slot, or the filler), reveal the
        segments whose time has come, delete what left the window past its grace, and rewrite
        the playlist when it changed."""
        with self._lock:
            now = self._now(now_s)
            aired = None
            decision = decide(self.schedule, self._state, now, self._ready_ids())
            if decision is not None:
                aired = self._air(decision, now)
            state, gone = expire(self._state, now)
            if gone:
                self._state = state
                self._save()  # recorded first: a crash before the deletion leaves only orphans
                for folder in gone:
                    shutil.rmtree(self.dir / folder, ignore_errors=True)
            written = self._write_playlist(now)
        return TickResult(aired, tuple(gone), written)

    def _source(self, decision: Decision) -> tuple[Decision, Path, Media]:
        """The folder and media that air for `decision`: the slot's, or the filler's when the
        slot is not ready or its files cannot be aired any more."""
        if decision.slot_id is not None:
            hls_dir = Path(self._state.ready[decision.index][1])
            try:
                return decision, hls_dir, load_media(hls_dir, self.options.target_duration_s)
            except (OSError, PlaylistError) as error:
                decision = replace(decision, slot_id=None,
                                   reason=f"slot {decision.slot_id} cannot air: {error}")
        return decision, self.dir / FILLER_DIR, self._filler

    def _air(self, decision: Decision, now_s: float) -> Aired:
        decision, source_dir, media = self._source(decision)
        filler = decision.slot_id is None
        folder = f"{ENTRY_PREFIX}{self._state.next_ordinal:06d}"
        _place(source_dir, media, self.dir / folder)
        self._state = air(self._state, decision, media=media,
                          slot_id=self.options.filler_id if filler else str(decision.slot_id),
                          folder=folder, filler=filler, now_s=now_s,
                          window_slots=self.options.window_slots, grace_s=self.options.grace_s)
        self._save()
        entry = self._state.window[-1]
        fields = {"index": entry.index, "slot_id": entry.slot_id, "air_time_s": entry.air_time_s,
                  "late_s": round(now_s - entry.air_time_s, 3), "media_sequence": entry.first_msn,
                  "discontinuity_sequence": entry.ordinal, "segments": len(media.segments)}
        if decision.skipped:
            log.warning("channel.air_times_skipped", count=decision.skipped, resumed_at_index=entry.index)
        if filler:
            log.warning("channel.filler_aired", reason=entry.reason,
                        fillers_aired=self._state.fillers_aired, **fields)
        else:
            log.info("channel.slot_aired", **fields)
        return entry

    def _write_playlist(self, now_s: float) -> bool:
        if not self._state.window:
            return False  # nothing has aired: no playlist rather than an empty one
        text = render_live(self._state.window, now_s, self.options.target_duration_s)
        if text == self._last_playlist:
            return False
        write_atomic(self.playlist_path, text.encode())
        self._last_playlist = text
        return True

    def _remove_orphans(self) -> None:
        """Delete airing folders the state does not know (a crash between placing an airing's
        files and recording it, or between recording a deletion and doing it)."""
        known = {entry.folder for entry in self._state.window} | {item.folder for item in self._state.retired}
        for child in self.dir.iterdir():
            name = child.name.lstrip(".").removesuffix(".tmp")
            if name.startswith(ENTRY_PREFIX) and (child.name not in known) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)

    def next_wakeup_s(self, now_s: float | None = None) -> float:
        """The wall-clock time at which `tick` next has work (now, when something is due)."""
        return next_wakeup_s(self.schedule, self._state, self._now(now_s), self._ready_ids())

    def stats(self, now_s: float | None = None) -> ChannelStats:
        """The channel's counters, window and next air time as of `now_s`."""
        now = self._now(now_s)
        window = self._state.window
        listed = [segment for entry in window for segment in entry.revealed(now)]
        index = max(self.schedule.latest_index_at(now),
                    -1 if self._state.last_index is None else self._state.last_index) + 1
        return ChannelStats(
            slots_aired=self._state.slots_aired, fillers_aired=self._state.fillers_aired,
            air_times_skipped=self._state.air_times_skipped, window_entries=len(window),
            window_segments=len(listed), window_duration_s=sum(s.duration_s for s in listed),
            on_air=window[-1] if window else None, next_index=index,
            next_air_time_s=self.schedule.air_time_s(index), next_ready_slot=self._ready_ids().get(index),
        )
