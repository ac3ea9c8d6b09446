"""The data that flows between stages: frozen, typed, unit-named.

Every stage speaks these types and nothing else, so a backend can be swapped without the
planner, the warp or the encoder noticing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np

FRAME_SIZE_PX = 512
"""Output frames are square, FRAME_SIZE_PX × FRAME_SIZE_PX RGB."""

SAMPLE_RATE_HZ = 24_000
"""Speech is 24 kHz mono float32 everywhere (Kokoro's native rate)."""


@dataclass(frozen=True)
class Actor:
    """A prepared portrait: the 512² RGB frame the warp animates, and where the face is in it.

    `landmarks_px` are MediaPipe face-mesh points (478 with iris refinement) in pixel units of
    `image`: x right, y down, z toward the viewer scaled like x. `crop_from_source` is the 2×3
    affine that maps source-image pixels to `image` pixels.
    """

    image: np.ndarray  # (512, 512, 3) uint8 RGB
    landmarks_px: np.ndarray  # (478, 3) float32
    crop_from_source: np.ndarray  # (2, 3) float64
    source: str  # where the picture came from (path or "builtin:astronaut")
    source_sha256: str


@dataclass(frozen=True)
class Phoneme:
    """One phoneme event: an IPA symbol and its time span in seconds from the audio start."""

    symbol: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Speech:
    """A speech track and, when the backend knows it, its phoneme timeline."""

    audio: np.ndarray  # (n,) float32 in [-1, 1] at SAMPLE_RATE_HZ
    phonemes: tuple[Phoneme, ...]  # empty when only audio is known (a recipe's wav)
    voice: str
    backend: str
    sample_rate_hz: int = SAMPLE_RATE_HZ

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate_hz


PLAN_TO_LP_SIGN = {"pitch": -1.0, "yaw": 1.0, "roll": 1.0}
"""Multiply a planner angle by this to get LivePortrait's (and the face mesh's; it is its own
inverse). Both use x right, y down, z into the image and R = Rz(roll)·Ry(yaw)·Rx(pitch); the
planner's +pitch lifts the chin where theirs drops it (derived in stages/warp/liveportrait/driving.py)."""


DRIVING_MODES = ("pose", "full")
"""pose: head, lids and brows from the driving clip, the mouth from the speech; full: all from the clip."""


@dataclass(frozen=True)
class DrivingSource:
    """The driving clip a slot renders from: the file (in the daemon, the spool's copy taken at
    submit), its SHA-256 when known, and how it drives (`mode`, one of DRIVING_MODES).

    A warp that reads the clip itself (LivePortrait runs M over its face crops) does so in its
    prepare step, from this, never in the warp; `plan.meta["driving"]` is only the record of it.
    """

    path: Path
    sha256: str | None
    mode: Literal["pose", "full"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str path is taken as given
        if self.mode not in DRIVING_MODES:
            raise ValueError(f"driving mode must be one of {', '.join(DRIVING_MODES)}, got {self.mode!r}")

    @property
    def kind(self) -> Literal["video", "template"]:
        """The clip's kind: a LivePortrait motion "template" (.npz), else a "video"."""
        return "template" if self.path.suffix.lower() == ".npz" else "video"

    @property
    def key(self) -> str:
        """What names the clip's content: its hash (the same bytes under any name are one clip),
        or its path where no hash is known."""
        return f"{self.kind}:{self.sha256}" if self.sha256 else f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class MotionPlan:
    """Per-frame animation curves, every array float32 of shape (n_frames,).

    Unitless curves are normalised: 0 = rest, 1 = the preset's full extent (lip_width and brow
    are signed: + spread / raise, − narrow / frown). Angles are degrees, shifts are pixels of the
    512² frame. The same plan drives either warp backend.
    """

    fps: int
    jaw_open: np.ndarray  # 0 closed … 1 wide open
    lip_width: np.ndarray  # −1 pursed … +1 spread
    lip_round: np.ndarray  # 0 … 1 rounded/protruded (oo, w)
    lips_closed: np.ndarray  # 0 … 1 pressed together (p, b, m)
    blink: np.ndarray  # 0 open … 1 upper lid fully down
    eye_wide: np.ndarray  # 0 … 1 upper lid raised (excitement)
    brow: np.ndarray  # −1 frown … +1 raised
    smile: np.ndarray  # 0 … 1
    head_yaw_deg: np.ndarray
    head_pitch_deg: np.ndarray
    head_roll_deg: np.ndarray
    shift_x_px: np.ndarray
    shift_y_px: np.ndarray
    meta: dict = field(default_factory=dict, compare=False)  # preset segments, seed, source
    driving: DrivingSource | None = field(default=None, compare=False)
    """The driving clip, when the plan was made from one (the curves already follow it)."""

    @property
    def n_frames(self) -> int:
        """Number of frames the plan covers."""
        return int(self.jaw_open.shape[0])

    def curves(self) -> dict[str, np.ndarray]:
        """The per-frame arrays by name (everything but fps, meta and driving)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_CURVES}

    def slice(self, frames: slice | np.ndarray) -> "MotionPlan":
        """The plan restricted to `frames`: a slice (views, no copies) or frame indices (copies)."""
        return MotionPlan(fps=self.fps, meta=self.meta, driving=self.driving,
                          **{k: v[frames] for k, v in self.curves().items()})


_NOT_CURVES = frozenset({"fps", "meta", "driving"})
