"""Prometheus metrics of the daemon: slot timing, deadlines, queue, arena and lip sync.

Everything lives in a `CollectorRegistry` of its own (never the process-global one), so two
daemons in one test process, or a test and a daemon, never see each other's series.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from stages.errors import StageInputError

# Stage runs go from milliseconds (motion plan) to tens of seconds (a CPU warp of 1080 frames).
STAGE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0,
                   60.0, 120.0)
# Accept → publish: a healthy slot takes one to two cadences of 45 s.
END_TO_END_BUCKETS_S = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
# Negative slack is a late publish; the fine steps around zero show how close the calls are.
SLACK_BUCKETS_S = (-60.0, -30.0, -15.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0,
                   30.0, 45.0, 60.0, 90.0)
# The lip-sync target is ±1 frame; ±4 and beyond is plainly broken.
FIRST_SEGMENT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""First segment on disk after the warp starts: a segment is 2 s of frames, well under 1 s on CPU."""
LIPSYNC_BUCKETS_FRAMES = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class MetricsOptions:
    """Which label values exist up front (so dashboards and alerts see zeros, not gaps)."""

    stages: tuple[str, ...] = ("image", "warp_prepare", "tts", "motion", "warp", "verify", "encode", "publish")
    outcomes: tuple[str, ...] = ("published", "published_late", "late", "failed", "rejected", "cancelled")
    process_metrics: bool = True
    """Also export CPU, resident memory and open files of this process (vortex_process_*)."""
    version: str = ""
    """Exported as vortex_build_info{version=...} when set."""


def _finite(field: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise StageInputError(field, "must be a finite number", value=value)
    return value


def _non_negative(field: str, value: float) -> float:
    value = _finite(field, value)
    if value < 0:
        raise StageInputError(field, "must not be negative", value=value)
    return value


class Metrics:
    """The daemon's metric series and the HTTP endpoint Prometheus scrapes."""

    def __init__(self, options: MetricsOptions | None = None) -> None:
        self.options = options or MetricsOptions()
        self.registry = CollectorRegistry()
        reg = self.registry
        self.stage_duration = Histogram(
            "vortex_stage_duration_seconds", "Wall time of one stage run for one slot.",
            ["stage"], buckets=STAGE_BUCKETS_S, registry=reg)
        self.slot_end_to_end = Histogram(
            "vortex_slot_end_to_end_seconds", "From recipe accepted to slot published.",
            buckets=END_TO_END_BUCKETS_S, registry=reg)
        self.deadline_slack = Histogram(
            "vortex_deadline_slack_seconds",
            "Deadline minus publish time per published slot (negative: late).",
            buckets=SLACK_BUCKETS_S, registry=reg)
        # A histogram with negative buckets exports no _sum, so the latest value gets a gauge.
        self.last_deadline_slack = Gauge(
            "vortex_last_deadline_slack_seconds", "Deadline slack of the most recent publish.",
            registry=reg)
        self.slots = Counter("vortex_slots", "Slots that reached a final state, by outcome.",
                             ["outcome"], registry=reg)
        self.deadline_misses = Counter(
            "vortex_deadline_misses", "Slots whose deadline passed without their video published.",
            registry=reg)
        self.queue_depth = Gauge("vortex_queue_depth",
                                 "Accepted slots not yet in a final state.", registry=reg)
        self.arena_bytes = Gauge("vortex_arena_bytes",
                                 "Device arena bytes by region: budget, used (views, or a model stage's pool), "
                                 "a stage's peak.", ["region", "kind"], registry=reg)
        self.warp_frames_per_second = Gauge(
            "vortex_warp_frames_per_second", "Frames per second of the most recent warp.",
            registry=reg)
        self.warp_fp32_rerenders = Counter(
            "vortex_warp_fp32_rerenders",
            "Warp chunks whose fp16 render was not finite and were rendered again in fp32.", registry=reg)
        self._fp32_rerenders_seen = 0
        self.lipsync_last_offset = Gauge(
            "vortex_lipsync_last_offset_frames",
            "Audio-visual offset of the most recent verified slot (positive: video leads).",
            registry=reg)
        self.lipsync_offset = Histogram(
            "vortex_lipsync_offset_frames", "Audio-visual offset per verified slot.",
            buckets=LIPSYNC_BUCKETS_FRAMES, registry=reg)
        self.last_publish = Gauge(
            "vortex_last_publish_timestamp_seconds",
            "Unix time of the most recent publish (0: none yet).", registry=reg)
        self._channel_series(reg)
        if self.options.process_metrics:
            ProcessCollector(namespace="vortex", registry=reg)
        if self.options.version:
            Info("vortex_build", "Version of the running daemon.", registry=reg).info(
                {"version": self.options.version})
        # Children created now export 0 from the first scrape: `increase()` and absent-series
        # alerts then work from start-up instead of after the first event.
        for stage in self.options.stages:
            self.stage_duration.labels(stage=stage)
        for outcome in self.options.outcomes:
            self.slots.labels(outcome=outcome)

    def _channel_series(self, reg: CollectorRegistry) -> None:
        """The stream's and the channel's series: first-segment latency, fillers, the window."""
        self.first_segment = Histogram(
            "vortex_first_segment_seconds", "From a slot's warp start to its first segment readable on disk.",
            buckets=FIRST_SEGMENT_BUCKETS_S, registry=reg)
        self.fillers_aired = Gauge(
            "vortex_channel_fillers_aired", "Air times the filler aired because the slot was not ready "
            "(since the channel began; it survives restarts).", registry=reg)
        self.channel_window = Gauge(
            "vortex_channel_window", "What the live playlist lists now.", ["unit"], registry=reg)
        for unit in ("seconds", "segments"):
            self.channel_window.labels(unit=unit)

    # ----- recording ---------------------------------------------------------------------------

    def observe_first_segment(self, seconds: float) -> None:
        """Record a slot's warp start → first segment readable."""
        self.first_segment.observe(_non_negative("first_segment_s", seconds))

    def set_channel(self, fillers_aired: int, window_s: float, window_segments: int) -> None:
        """The channel's filler count and the live playlist's length (seconds and segments)."""
        self.fillers_aired.set(fillers_aired)
        self.channel_window.labels(unit="seconds").set(window_s)
        self.channel_window.labels(unit="segments").set(window_segments)

    def observe_stage(self, stage: str, duration_s: float) -> None:
        """Record one run of `stage` that took `duration_s` seconds."""
        if stage not in self.options.stages:
            # A fixed label set keeps the series count bounded whatever the caller passes.
            raise StageInputError("stage", f"unknown stage; expected one of {self.options.stages}",
                                  stage=stage)
        self.stage_duration.labels(stage=stage).observe(_non_negative("duration_s", duration_s))

    def observe_published(self, end_to_end_s: float | None, deadline_slack_s: float,
                          published_unix_s: float | None = None, late: bool | None = None) -> None:
        """Record a published slot — counted here and only here — with its accept→publish time
        (None when unknown, e.g. accepted before a restart) and its slack (negative: late).
        `late` is the scheduler's verdict; without it a negative slack means late."""
        deadline_slack_s = _finite("deadline_slack_s", deadline_slack_s)
        if end_to_end_s is not None:
            self.slot_end_to_end.observe(_non_negative("end_to_end_s", end_to_end_s))
        self.deadline_slack.observe(deadline_slack_s)
        self.last_deadline_slack.set(deadline_slack_s)
        late = deadline_slack_s < 0 if late is None else late
        self.count_slot("published_late" if late else "published")
        self.last_publish.set(time.time() if published_unix_s is None else published_unix_s)

    def count_slot(self, outcome: str) -> None:
        """Count a slot that reached `outcome` (published ones go through observe_published)."""
        if outcome not in self.options.outcomes:
            raise StageInputError("outcome",
                                  f"unknown outcome; expected one of {self.options.outcomes}",
                                  outcome=outcome)
        self.slots.labels(outcome=outcome).inc()

    def count_deadline_misses(self, count: int = 1) -> None:
        """Add `count` missed deadlines."""
        if count < 0:
            raise StageInputError("count", "must not be negative", count=count)
        self.deadline_misses.inc(count)

    def set_queue_depth(self, slot_count: int) -> None:
        """Set how many accepted slots are not final yet."""
        self.queue_depth.set(_non_negative("slot_count", slot_count))

    def set_arena_region(self, region: str, budget_bytes: int, used_bytes: int,
                         peak_bytes: int | None = None) -> None:
        """Set the budget and current use of one arena region, and a model stage's peak."""
        if not region:
            raise StageInputError("region", "must be a non-empty name")
        self.arena_bytes.labels(region=region, kind="budget").set(
            _non_negative("budget_bytes", budget_bytes))
        self.arena_bytes.labels(region=region, kind="used").set(
            _non_negative("used_bytes", used_bytes))
        if peak_bytes is not None:
            self.arena_bytes.labels(region=region, kind="peak").set(_non_negative("peak_bytes", peak_bytes))

    def record_warp_throughput(self, frame_count: int, duration_s: float) -> float:
        """Set the warp frames/s gauge from one warp run; returns the rate."""
        frame_count = _non_negative("frame_count", frame_count)
        duration_s = _non_negative("duration_s", duration_s)
        if duration_s == 0:
            raise StageInputError("duration_s", "must be positive to compute a rate")
        rate = frame_count / duration_s
        self.warp_frames_per_second.set(rate)
        return rate

    def sync_fp32_rerenders(self, backend_total: int) -> None:
        """Advance the fp32 re-render counter to the warp backend's running total."""
        backend_total = _non_negative("backend_total", backend_total)
        if backend_total > self._fp32_rerenders_seen:
            self.warp_fp32_rerenders.inc(backend_total - self._fp32_rerenders_seen)
            self._fp32_rerenders_seen = backend_total

    def observe_lipsync_offset(self, offset_frames: float) -> None:
        """Record the audio-visual offset the verify stage measured for one slot."""
        offset_frames = _finite("offset_frames", offset_frames)
        self.lipsync_last_offset.set(offset_frames)
        self.lipsync_offset.observe(offset_frames)

    # ----- exposition --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
