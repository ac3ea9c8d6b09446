"""The channel's pure policy: what airs at time t, and how the live window moves.

No files and no clock: every function takes the state and the time (wall-clock seconds since the
epoch, UTC — air times are shown to viewers as `EXT-X-PROGRAM-DATE-TIME`) and returns a new
state, so the whole timeline can be replayed with made-up times in tests. `vortexd.channel`
does the I/O around these decisions.

Model. Air index k airs at `t0 + cadence·k`. Each airing (a slot, or the filler in its place)
is an `Aired` entry holding the media segments it contributes, in order. A segment is *revealed*
(listed in the live playlist) once its wall-clock start, air time + the durations before it, has
come: the playlist's live edge follows real time, so a player that joins at an air time sees the
start of that slot rather than its last seconds. When the next entry airs, the segments of the
previous one that would start after the new air time are cut (they never air), so one entry
never overlaps the next. The window keeps the last `window_slots` entries; an entry that slides
out is *retired* and its files are deleted after a grace period.

Numbering (RFC 8216): every segment ever listed has a media sequence number (`first_msn` + its
position in its entry); entries are numbered 0, 1, 2 … (`ordinal`) over the channel's life and
each one after the first starts with a discontinuity, so an entry's ordinal is exactly the
discontinuity sequence number of its segments. The playlist shows EXT-X-MEDIA-SEQUENCE =
the first listed entry's `first_msn` and EXT-X-DISCONTINUITY-SEQUENCE = its `ordinal` (the
discontinuity tag before the first listed entry is dropped with the entry before it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

_EPS_S = 1e-6
"""Tolerance for comparing a segment's start with an air time: segment starts are sums of
EXTINF durations written with 6 decimals, so two equal instants can differ in the last bits."""


@dataclass(frozen=True)
class Segment:
    """One media segment: its file name (relative to the folder holding it) and duration."""

    name: str
    duration_s: float


@dataclass(frozen=True)
class Media:
    """One slot's HLS media: an init segment (EXT-X-MAP) and its media segments, in order."""

    init: str
    segments: tuple[Segment, ...]

    @property
    def duration_s(self) -> float:
        """The sum of the segments' durations."""
        return sum(segment.duration_s for segment in self.segments)

    def starts_s(self) -> list[float]:
        """Each segment's start, in seconds from the media's start."""
        starts, at = [], 0.0
        for segment in self.segments:
            starts.append(at)
            at += segment.duration_s
        return starts


@dataclass(frozen=True)
class Schedule:
    """The air timeline: index k airs at `t0_s + cadence_s·k` (wall-clock seconds, UTC)."""

    t0_s: float
    cadence_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t0_s) and math.isfinite(self.cadence_s)) or self.cadence_s <= 0:
            raise ValueError(f"schedule needs a finite t0 and a positive cadence, got {self}")

    def air_time_s(self, index: int) -> float:
        """The wall-clock air time of index `index`."""
        return self.t0_s + self.cadence_s * index

    def latest_index_at(self, now_s: float) -> int:
        """The largest index whose air time is at or before `now_s` (negative before t0)."""
        index = math.floor((now_s - self.t0_s) / self.cadence_s)
        # Floor of a float quotient can land one off at exact multiples; settle it on air times.
        while self.air_time_s(index + 1) <= now_s:
            index += 1
        while self.air_time_s(index) > now_s:
            index -= 1
        return index


@dataclass(frozen=True)
class Aired:
    """One airing on the channel: a slot, or the filler aired in its place."""

    ordinal: int
    index: int
    slot_id: str
    filler: bool
    air_time_s: float
    first_msn: int
    folder: str
    media: Media
    reason: str = ""

    def revealed(self, now_s: float) -> tuple[Segment, ...]:
        """The segments whose wall-clock start has come by `now_s` (always at least the first)."""
        count = sum(1 for start in self.media.starts_s() if self.air_time_s + start <= now_s + _EPS_S)
        return self.media.segments[:max(1, count)]


@dataclass(frozen=True)
class Retired:
    """An entry's folder that left the window, kept until `delete_after_s` for late readers."""

    folder: str
    delete_after_s: float


@dataclass(frozen=True)
class ChannelState:
    """Everything the channel must remember across a restart (see `vortexd.channel_state`)."""

    window: tuple[Aired, ...] = ()
    retired: tuple[Retired, ...] = ()
    ready: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    next_ordinal: int = 0
    next_msn: int = 0
    last_index: int | None = None
    last_air_time_s: float | None = None
    slots_aired: int = 0
    fillers_aired: int = 0
    air_times_skipped: int = 0


@dataclass(frozen=True)
class Decision:
    """What airs now: `slot_id` of a ready slot, or None for the filler (with the reason)."""

    index: int
    air_time_s: float
    slot_id: str | None
    reason: str
    skipped: int = 0


def decide(schedule: Schedule, state: ChannelState, now_s: float,
           ready: Mapping[int, str]) -> Decision | None:
    """What airs at `now_s`: None when nothing is due, else the due index and its source.

    The due index is the latest one whose air time has come and that has not aired. Air times
    that passed while the channel was not running (after a crash, or a stalled caller) are
    skipped rather than aired late — airing them now would stack minutes of backdated media —
    and counted in `Decision.skipped`. An index whose slot is not in `ready` airs the filler.
    """
    index = schedule.latest_index_at(now_s)
    if index < 0 or (state.last_index is not None and index <= state.last_index):
        return None
    air_time_s = schedule.air_time_s(index)
    if state.last_air_time_s is not None and air_time_s <= state.last_air_time_s + _EPS_S:
        # The schedule moved (a new t0 after a restart): never air into the channel's past.
        return None
    skipped = 0 if state.last_index is None else index - state.last_index - 1
    slot_id = ready.get(index)
    reason = "" if slot_id is not None else f"slot for air index {index} not ready at its air time"
    return Decision(index, air_time_s, slot_id, reason, skipped)


def _cut_to(entry: Aired, until_s: float) -> Aired:
    """`entry` without the segments that would start at or after wall-clock `until_s`."""
    starts = entry.media.starts_s()
    keep = max(1, sum(1 for start in starts if entry.air_time_s + start < until_s - _EPS_S))
    if keep == len(starts):
        return entry
    return replace(entry, media=replace(entry.media, segments=entry.media.segments[:keep]))


def retire_grace_s(window: tuple[Aired, ...], leaving: Aired, grace_s: float | None) -> float:
    """How long a leaving entry's files stay: `grace_s`, or by default RFC 8216 §6.2.2's minimum,
    the longest playlist that listed them (the window before it slid) plus the segment's duration."""
    if grace_s is not None:
        return grace_s
    playlist_s = sum(entry.media.duration_s for entry in window)
    return playlist_s + max(segment.duration_s for segment in leaving.media.segments)


def air(state: ChannelState, decision: Decision, *, media: Media, slot_id: str, folder: str,
        filler: bool, now_s: float, window_slots: int, grace_s: float | None) -> ChannelState:
    """The state after `decision` airs `media` (already placed in `folder`) at `now_s`.

    Cuts the previous entry at the new air time, numbers the new entry, slides the window
    (retiring what leaves it, to be deleted after the grace period) and updates the counters.
    """
    if window_slots < 1:
        raise ValueError(f"window_slots must be at least 1, got {window_slots}")
    window = state.window
    next_msn = state.next_msn
    if window:
        last = _cut_to(window[-1], decision.air_time_s)
        next_msn = last.first_msn + len(last.media.segments)
        window = window[:-1] + (last,)
    entry = Aired(ordinal=state.next_ordinal, index=decision.index, slot_id=slot_id, filler=filler,
                  air_time_s=decision.air_time_s, first_msn=next_msn, folder=folder, media=media,
                  reason=decision.reason if filler else "")
    window = window + (entry,)
    retired = list(state.retired)
    while len(window) > window_slots:
        leaving, window = window[0], window[1:]
        retired.append(Retired(leaving.folder, now_s + retire_grace_s(window + (leaving,), leaving,
                                                                      grace_s)))
    ready = {index: value for index, value in state.ready.items() if index > decision.index}
    return replace(state, window=window, retired=tuple(retired), ready=ready,
                   next_ordinal=state.next_ordinal + 1, next_msn=next_msn + len(media.segments),
                   last_index=decision.index, last_air_time_s=decision.air_time_s,
                   slots_aired=state.slots_aired + (0 if filler else 1),
                   fillers_aired=state.fillers_aired + (1 if filler else 0),
                   air_times_skipped=state.air_times_skipped + decision.skipped)


def expire(state: ChannelState, now_s: float) -> tuple[ChannelState, list[str]]:
    """The state without the retired folders whose grace has passed, and those folders' names."""
    gone = [item.folder for item in state.retired if item.delete_after_s <= now_s]
    if not gone:
        return state, []
    kept = tuple(item for item in state.retired if item.delete_after_s > now_s)
    return replace(state, retired=kept), gone


def next_wakeup_s(schedule: Schedule, state: ChannelState, now_s: float,
                  ready: Mapping[int, str]) -> float:
    """The next wall-clock time at which `tick` has work: an air time, a segment to reveal, or a
    retired folder to delete (`now_s` itself when something is due already)."""
    if decide(schedule, state, now_s, ready) is not None:
        return now_s
    index = max(schedule.latest_index_at(now_s), -1 if state.last_index is None else state.last_index)
    times = [schedule.air_time_s(index + 1)]
    if state.window:
        last = state.window[-1]
        times += [last.air_time_s + start for start in last.media.starts_s()
                  if last.air_time_s + start > now_s + _EPS_S]
    times += [item.delete_after_s for item in state.retired]
    return max(now_s, min(times))
