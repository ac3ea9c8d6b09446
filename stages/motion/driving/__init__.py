"""Driving motion: head pose, lids, brows (and mouth) taken from a real face video or a template.

    motion = load_driving("idle.mp4")                       # or "talking.npz"; refusals name motion.driving
    plan = plan_motion(speech, "neutral", seed, n_frames, driving=motion, driving_mode="pose")

A video is tracked with MediaPipe's face mesh (video.py), read as plan curves relative to its first
neutral frame and smoothed without lag (motion.py), then resampled and looped to the slot by
rounded ping-pong (fit.py). The plan then drives either warp backend as usual.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stages.errors import StageInputError
from stages.motion.driving.fit import FittedDriving, fit_to_slot
from stages.motion.driving.motion import DrivingMotion, motion_from_video
from stages.motion.driving.video import DRIVING_FIELD, TrackedVideo, track_video

TEMPLATE_SUFFIX = ".npz"


def load_driving(path: str | Path) -> DrivingMotion:
    """The motion of a driving video, or of a LivePortrait template (`.npz`); StageInputError naming
    `motion.driving` when it cannot be read, has no face in most frames, or has the wrong shape."""
    path = Path(path)
    if path.suffix.lower() != TEMPLATE_SUFFIX:
        motion = motion_from_video(track_video(path))
    else:
        from stages.motion.driving.template import motion_from_template
        from stages.warp.liveportrait.templates import load_template

        try:
            motion = motion_from_template(load_template(path))
        except StageInputError as exc:
            raise StageInputError(DRIVING_FIELD, exc.message, **exc.details) from None
    # The clip itself travels with the plan: LivePortrait reads its own motion from it (M).
    return dataclasses.replace(motion, meta={**motion.meta, "source": str(path)})


__all__ = ["DRIVING_FIELD", "DrivingMotion", "FittedDriving", "TrackedVideo", "fit_to_slot", "load_driving",
           "motion_from_video", "track_video"]
