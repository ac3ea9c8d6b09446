"""Driving motion: head pose, lids, brows (and mouth) taken from a real face video or a template.

    motion = load_driving("idle.mp4")                       # or "talking.npz"; refusals name motion.driving
    plan = plan_motion(speech, "neutral", seed, n_frames, driving=motion, driving_mode="pose")

A video's headers are checked first (length, frame size, frame rate: video.py), a template's too
(array names, dtypes, shapes, bytes: template_bounds.py), so a hostile file is refused before any
decoding or loading. A video is then tracked with MediaPipe's face mesh (video.py), read as plan
curves relative to its first neutral frame and smoothed without lag (motion.py), then resampled
and looped to the slot by rounded ping-pong (fit.py). The plan then drives either warp backend as usual.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from stages.errors import StageInputError
from stages.motion.driving.fit import FittedDriving, fit_to_slot
from stages.motion.driving.motion import DrivingMotion, motion_from_video
from stages.motion.driving.video import DRIVING_FIELD, TrackedVideo, track_video

TEMPLATE_SUFFIX = ".npz"


MOTION_CACHE_ENTRIES = 8
"""Motions kept by content (≈ 0.5 MB for a 120 s clip): the daemon checks a clip at submit and its
prepare stage needs the same motion again, from the spool copy under another name."""

_motions: OrderedDict[str, DrivingMotion] = OrderedDict()
_motions_lock = threading.Lock()


def _read_motion(path: Path) -> DrivingMotion:
    if path.suffix.lower() != TEMPLATE_SUFFIX:
        return motion_from_video(track_video(path))
    from stages.motion.driving.template import motion_from_template
    from stages.motion.driving.template_bounds import check_template_file
    from stages.warp.liveportrait.templates import load_template

    check_template_file(path)  # headers first: a hostile template is never loaded
    try:
        return motion_from_template(load_template(path))
    except StageInputError as exc:
        raise StageInputError(DRIVING_FIELD, exc.message, **exc.details) from None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(8 * 2**20):
                digest.update(chunk)
    except OSError as exc:
        raise StageInputError(DRIVING_FIELD, f"{path.name}: the file cannot be read: {exc.strerror}") from None
    return digest.hexdigest()


def load_driving(path: str | Path) -> DrivingMotion:
    """The motion of a driving video, or of a LivePortrait template (`.npz`); StageInputError naming
    `motion.driving` when it cannot be read, is too long or too large, has no face in most frames,
    or has the wrong shape. Kept by content: the same bytes under another name are not read again."""
    path = Path(path)
    key = f"{_file_sha256(path)}{path.suffix.lower()}"
    with _motions_lock:
        motion = _motions.get(key)
        if motion is not None:
            _motions.move_to_end(key)
    if motion is None:
        motion = _read_motion(path)
        for values in motion.curves.values():
            values.setflags(write=False)  # shared by every caller that reads the same bytes
        with _motions_lock:
            _motions[key] = motion
            while len(_motions) > MOTION_CACHE_ENTRIES:
                _motions.popitem(last=False)
    # The clip itself travels with the plan: LivePortrait reads its own motion from it (M).
    return dataclasses.replace(motion, meta={**motion.meta, "source": str(path)})


__all__ = ["DRIVING_FIELD", "DrivingMotion", "FittedDriving", "TrackedVideo", "fit_to_slot", "load_driving",
           "motion_from_video", "track_video"]
