"""A LivePortrait backend's driving clips: read in the prepare stage, only looked up in the warp.

    clips = DrivingClips(read)                     # read(path) → MotionTemplate (M over a video's crops)
    clips.prepare(plan.driving, n_frames, fps)     # prepare stage: read once, fit to the slot, keep
    clips.fitted(plan.driving, n_frames, fps)      # warp stage: the kept fit, or MotionNotPrepared

A clip's template is kept by content (DrivingSource.key: the same bytes under another name are
not read again), its fits by (clip, slot frames, fps). Reading a video costs M over every frame's
face crop, seconds for a long clip: the warp, the deadline-critical stage, never does it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

from stages.motion.driving.fit import clip_positions
from stages.types import DrivingSource
from stages.warp.base import MotionNotPrepared
from stages.warp.liveportrait.templates import MotionTemplate, resample

KEPT = 8
"""Driving clips' templates, and as many fits to slot lengths, kept (a few clips a day; a fit of a
45 s slot is ~0.3 MB). More than the slots in flight at once, so a fit made in a slot's prepare
stage is still there for its warp."""

K = TypeVar("K", bound=Hashable)


class DrivingClips:
    """Driving clips' LivePortrait motion, read once and fitted to slots (see the module docstring).
    Safe from several threads."""

    def __init__(self, read: Callable[[Path], MotionTemplate], kept: int = KEPT) -> None:
        """`read(path)` makes a clip's template (a template file as it is, a video through M)."""
        self._read = read
        self._kept = kept
        self._templates: OrderedDict[str, MotionTemplate] = OrderedDict()
        self._fits: OrderedDict[tuple[str, int, int], MotionTemplate] = OrderedDict()
        self._lock = threading.Lock()

    def template(self, source: DrivingSource) -> MotionTemplate:
        """The clip's whole template, read now unless kept."""
        return self._kept_or_made(self._templates, source.key, lambda: self._read(source.path))

    def prepare(self, source: DrivingSource, n_frames: int, fps: int) -> MotionTemplate:
        """The clip fitted to a slot of `n_frames` at `fps` by the rounded ping-pong the plan was
        fitted with (stages.motion.driving.fit), made now unless kept, and kept for the warp."""
        def fit() -> MotionTemplate:
            template = self.template(source)
            return resample(template, clip_positions(template.n_frames, template.fps, n_frames, fps), fps)
        return self._kept_or_made(self._fits, (source.key, n_frames, fps), fit)

    def fitted(self, source: DrivingSource, n_frames: int, fps: int) -> MotionTemplate:
        """The fit prepare() kept. Never reads the clip: MotionNotPrepared when there is none."""
        with self._lock:
            fit = self._fits.get((source.key, n_frames, fps))
        if fit is None:
            raise MotionNotPrepared(
                f"driving clip {source.path.name!r} was not prepared for a {n_frames}-frame plan at {fps} fps: "
                "call prepared.prepare_motion(plan) in the prepare stage before render (the warp does not "
                "read driving clips)")
        return fit

    def prepared_fits(self) -> list[tuple[str, int, int]]:
        """The (clip key, frames, fps) of every fit kept, oldest first."""
        with self._lock:
            return list(self._fits)

    def _kept_or_made(self, store: OrderedDict[K, MotionTemplate], key: K,
                      make: Callable[[], MotionTemplate]) -> MotionTemplate:
        """`store[key]`, made by `make()` (outside the lock: a warp looking up another clip never
        waits behind a read) if absent; the least recently used of `kept` goes first."""
        with self._lock:
            found = store.get(key)
            if found is not None:
                store.move_to_end(key)
                return found
        made = make()
        with self._lock:
            found = store.setdefault(key, made)
            store.move_to_end(key)
            while len(store) > self._kept:
                store.popitem(last=False)
            return found
