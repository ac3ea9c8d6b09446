"""A driving video, read once: its frame rate and the face-mesh landmarks of every frame (of every
other frame and so on for clips faster than MAX_TRACKED_FPS).

Frames are decoded and tracked one at a time (MediaPipe in tracking mode), so a long video costs
its landmarks (~6 KB a frame), never its pixels. A video that cannot be read, is too long, or
shows a face in too few frames is refused naming `motion.driving`; the few frames where the
tracker loses the face are filled from their neighbours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.errors import StageInputError
from stages.image.face import N_LANDMARKS, FaceTracker

DRIVING_FIELD = "motion.driving"
MAX_DRIVING_S = 120.0
"""Longer videos are refused: a slot is 45 s, and ping-pong fits any shorter clip to it."""
MAX_FRAME_PIXELS = 1920 * 1080
"""Larger frames are refused: the face mesh works on a 256² crop anyway, and decoding and tracking
a 120 s clip at 1080p already takes 25–45 s of the submit (measured: 166 tracked frames/s here)."""
MAX_TRACKED_FPS = 30.0
"""Faster clips are read at every k-th frame, k = ⌈fps / 30⌉: 30 readings a second still put a
100 ms blink on three frames, and a 60 fps clip is checked at submit as fast as a 30 fps one."""
MAX_SOURCE_FPS = 240.0
"""Faster streams are refused: even read at every k-th frame, each frame must still be decoded, and
a 120 s clip at 240 fps is already 28,800 decoded frames."""
MIN_FACE_FRACTION = 0.8
"""The face must be found in at least this share of the frames ("most frames")."""


@dataclass(frozen=True)
class TrackedVideo:
    """Landmarks (T, 478, 3) in pixels of a video at `fps`; `found` marks frames where the tracker
    saw the face (the others were interpolated)."""

    fps: float
    landmarks: np.ndarray
    found: np.ndarray
    size_px: tuple[int, int]  # (width, height)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.landmarks.shape[0])


def _refuse(path: Path, reason: str, **details: object) -> StageInputError:
    return StageInputError(DRIVING_FIELD, f"{path.name}: {reason}", **details)


def _declared_duration_s(container: Any, stream: Any, fps: float) -> float:
    """The length the file's metadata declares for the video stream (its duration, or its frame
    count ÷ fps; the container's when the stream says neither, which also counts other streams):
    read from headers, so a clip too long is refused before a single frame is decoded. Metadata
    that understates the length is caught while decoding (_decode_and_track)."""
    import av

    lengths = []
    if stream.duration is not None and stream.time_base is not None:
        lengths.append(float(stream.duration * stream.time_base))
    if stream.frames:
        lengths.append(stream.frames / fps)
    if not lengths and container.duration is not None:
        lengths.append(container.duration / av.time_base)
    return max(lengths, default=0.0)


def _check_cheap_facts(path: Path, container: Any, stream: Any, fps: float) -> None:
    """Refuse what the headers already show is too much: frame size, frame rate and length."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_FRAME_PIXELS:
        raise _refuse(path, f"frames of {width}×{height} are larger than 1920×1080; scale the clip down",
                      width=width, height=height)
    if fps > MAX_SOURCE_FPS:
        raise _refuse(path, f"{fps:g} frames a second is faster than {MAX_SOURCE_FPS:.0f}", fps=fps)
    length_s = _declared_duration_s(container, stream, fps)
    # Half a frame of slack: containers round their duration up to their own time base.
    if length_s > MAX_DRIVING_S + 0.5 / fps:
        raise _refuse(path, f"the clip is {length_s:.0f} s long; longer than {MAX_DRIVING_S:.0f} s",
                      duration_s=round(length_s, 3), max_s=MAX_DRIVING_S)


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[tuple[Any, Any, float]]:
    """(container, video stream, fps) of a readable video whose headers pass the cheap checks (frame
    size, frame rate, declared length); refusals name motion.driving."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise _refuse(path, f"not a readable video ({exc})") from None
    with container:
        if not container.streams.video:
            raise _refuse(path, "the file has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        if not np.isfinite(fps) or fps <= 0:
            raise _refuse(path, "the video stream has no frame rate")
        _check_cheap_facts(path, container, stream, fps)
        yield container, stream, fps


def upright(rgb: np.ndarray, rotation_deg: float) -> np.ndarray:
    """A decoded frame as it is meant to be shown: turned by its display rotation (counter-clockwise
    degrees; phones store a portrait clip sideways and say so there), or as it is when that is 0.
    A sideways face would swap the head's yaw and pitch, and LivePortrait's crops would lie on
    their side."""
    quarter_turns = int(round(rotation_deg / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def frame_step(fps: float) -> int:
    """Every how many frames a clip at `fps` is read (MAX_TRACKED_FPS); its motion has fps / step."""
    return max(1, int(np.ceil(fps / MAX_TRACKED_FPS - 1e-6)))


def tracked_frames(path: Path, container: Any, stream: Any,
                   step: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(RGB frame, its (478, 3) landmarks or None) for every `step`-th frame, decoded and tracked one
    at a time (the others are decoded only: a compressed stream has to be)."""
    import av

    decoded = 0
    with FaceTracker() as tracker:
        try:
            for frame in container.decode(stream):
                decoded += 1
                if (decoded - 1) % step:
                    continue
                rgb = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                yield rgb, tracker.landmarks(rgb)
        except av.error.FFmpegError as exc:
            raise _refuse(path, f"the video cannot be decoded past frame {decoded} ({exc})") from None


def _decode_and_track(path: Path) -> tuple[float, list[np.ndarray | None], tuple[int, int]]:
    rows: list[np.ndarray | None] = []
    with open_video(path) as (container, stream, fps):
        size = (stream.codec_context.width, stream.codec_context.height)
        step = frame_step(fps)
        for rgb, landmarks in tracked_frames(path, container, stream, step):
            if len(rows) >= MAX_DRIVING_S * fps / step:
                raise _refuse(path, f"longer than {MAX_DRIVING_S:.0f} s", max_s=MAX_DRIVING_S)
            rows.append(landmarks)
            size = (rgb.shape[1], rgb.shape[0])  # as shown: a sideways-stored clip stands up
    return fps / step, rows, size


def _fill_gaps(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Frames without a face: every coordinate interpolated in time from the nearest found frames."""
    if found.all():
        return landmarks
    t = np.arange(len(landmarks))
    flat = landmarks.reshape(len(landmarks), -1)
    filled = np.empty_like(flat)
    for column in range(flat.shape[1]):
        filled[:, column] = np.interp(t, t[found], flat[found, column])
    return filled.reshape(landmarks.shape)


def track_video(path: str | Path) -> TrackedVideo:
    """Decode `path` and track the face in every frame (every `frame_step`-th of a fast clip);
    refusals name `motion.driving`."""
    path = Path(path)
    fps, rows, size = _decode_and_track(path)
    if not rows:
        raise _refuse(path, "the video has no frames")
    found = np.array([row is not None for row in rows])
    if found.mean() < MIN_FACE_FRACTION:
        raise _refuse(path, f"a face was found in only {int(found.sum())} of {len(rows)} frames; a driving "
                      f"video must show one face in most frames", found=int(found.sum()), frames=len(rows))
    empty = np.full((N_LANDMARKS, 3), np.nan, np.float32)
    landmarks = np.stack([row if row is not None else empty for row in rows]).astype(np.float64)
    return TrackedVideo(fps, _fill_gaps(landmarks, found), found, size)
