"""Driving motion: the plan's curves as a driving video (or a LivePortrait template) performs them.

From a video (LivePortrait's relative mode, on the face mesh): everything is relative to the
video's first neutral-looking frame — eyes open, mouth closed, head near its usual pose — so a
clip that starts mid-blink or mid-turn does not bias the whole slot. Per frame:
- head yaw, pitch, roll: the rigid fit of the skull's points to the reference (face_geometry),
  in the planner's signs;
- translation: how far the face centre moves beyond what the rotation explains (a turning head
  moves its centre too, and the warp already moves it for the rotation), in actor pixels;
- blink: blinks and held closures shut the lids, any slower narrowing only narrows them
  (blink_from_aperture); eye_wide: the aperture above the clip's open level; brow: brow height
  against its median; mouth (used by "full" mode): lip gap, width and corner lift.
Each curve is then smoothed with a zero-phase Gaussian, so tracker jitter goes without the curve
lagging the real motion; a blink's dip is left as it is, so it keeps its frame and depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.image.crop import INTEROCULAR_PX
from stages.motion.curves import gaussian_smooth, soft_limit, true_runs
from stages.motion.driving import face_geometry as geo
from stages.motion.driving.blinks import MAX_BLINK_S, blink_spans, local_open_level
from stages.motion.driving.video import TrackedVideo
from stages.types import PLAN_TO_LP_SIGN

POSE_CURVES = ("head_yaw_deg", "head_pitch_deg", "head_roll_deg", "shift_x_px", "shift_y_px",
               "blink", "eye_wide", "brow")
"""What "pose" mode takes from the driving motion (the mouth and smile stay with the speech)."""
MOUTH_CURVES = ("jaw_open", "lip_width", "lip_round", "lips_closed", "smile")
"""What "full" mode takes as well."""

SMOOTH_S = {"pose": 0.08, "shift": 0.3, "lids": 0.012, "face": 0.04, "mouth": 0.02}
"""Zero-phase Gaussian σ per curve group, in seconds (zero-phase: smoothing never delays a movement).
Head: σ = 80 ms keeps 88 % of a 1 Hz turn and 4 % of a 5 Hz tracker wobble (measured: the rendered
eye midpoint's jitter fell from above the clips' own to about it, d11 0.067 → 0.044 against 0.060).
Translation: 300 ms (keeps 85 % of a 0.3 Hz sway), since it is what is left of the face centre's
movement once the turning is taken out, and that difference keeps the tracker's wobble of both
(measured on d9: at 80 ms the shift alone took the slot's eye-midpoint jitter from 0.019 to 0.025,
above the clip's own 0.020; at 300 ms it is 0.0198). Lids: 12 ms on their narrowing and widening; a
blink's dip is not smoothed at all, so one a single clip frame deep keeps its depth."""

_SHUT_FRACTION = 0.4
"""A lid aperture this fraction of the open level reads as fully shut. The mesh never reaches 0, the
clips' blinks bottom out at 0.2–0.5 of the open level at 25–30 fps, and the mesh warp's own shut
eye reads 0.36–0.48 of its open one: at 0.4 a dip to blinks.BLINK_BELOW (0.6) renders at about
0.6 of the rendered open level too, so a blink shows for as long as the clip's does."""
_MAX_NARROW = 0.4
"""Outside blinks the lids close at most this far (a narrowed eye, a look down, a half-blink): the
rest of their travel is left for blinks, so one always shows as one. At 0.4 the mesh warp's eye
reads ≥ 0.8 of its open aperture, and its shut eye 0.36–0.48 (measured with MediaPipe at yaw
±20°, pitch ±10°): a blink from a narrowed eye still dips below blinks.BLINK_BELOW of it."""
_BLINK_EDGE_S = 0.2
"""A blink's closing and reopening, either side of its dip below BLINK_BELOW, follow the aperture
for this long (a lid closes in ≈ 100 ms and reopens in ≈ 200 ms)."""
# What reads as a curve's full extent (inter-ocular units unless said), from the five clips:
_WIDE_FRACTION = 0.35  # lid aperture above the open level, as a fraction of it: eye_wide 1
_BROW_RANGE = 0.06  # brow height change: a full raise or frown (the clips' 5–95 % span is about ±0.04)
_JAW_RANGE = 0.45  # lip gap: a wide-open jaw (the talking clips' 95th percentile is 0.42–0.47)
_CLOSED_GAP = 0.03  # lip gap under which the lips are pressed (closed-mouth frames read 0.013)
_WIDTH_RANGE = 0.2  # mouth width change, as a fraction of the reference's: spread or pursed
_SMILE_RANGE = 0.08  # corner lift above the reference: a full smile


@dataclass(frozen=True)
class DrivingMotion:
    """Plan curves (float64, one value per source frame at `fps`) performed by a driving clip."""

    fps: float
    curves: dict[str, np.ndarray]
    reference_frame: int = 0
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def n_frames(self) -> int:
        """Number of source frames."""
        return int(next(iter(self.curves.values())).shape[0])


def neutral_frame(landmarks: np.ndarray) -> int:
    """The first frame that looks neutral: eyes open, mouth closed, head within 6° of its median pose
    (relaxed step by step when no frame qualifies)."""
    aperture, gap = geo.eye_aperture(landmarks), geo.mouth_gap(landmarks)
    pose = geo.head_rotation_deg(landmarks, landmarks[0])[:, :2]
    open_eyes = aperture >= 0.85 * np.percentile(aperture, 90)
    closed_mouth = gap <= max(np.percentile(gap, 25), 0.05)
    usual_pose = np.all(np.abs(pose - np.median(pose, axis=0)) <= 6.0, axis=1)
    for wanted in (open_eyes & closed_mouth & usual_pose, open_eyes & usual_pose, open_eyes):
        if wanted.any():
            return int(np.argmax(wanted))
    return 0


_CENTRE_POINTS = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1)
"""Forehead and nose line: the face centre whose movement is the translation (the eye corners
and cheeks are left out: lids and smiles move them)."""
_SHIFT_LIMIT_PX = 0.2 * INTEROCULAR_PX
"""Translations are softly limited to 0.2 inter-ocular distances (≈ 18 px, ten times the neutral
preset's sway): a talking head that moves further is mostly turning, which the rotation already
carries, and larger shifts pull the warp's eyes and lids out of shape (measured: a blink under a
50 px shift closes the lids half as far)."""


def _translation_px(landmarks: np.ndarray, reference: np.ndarray, angles: np.ndarray, fps: float) -> np.ndarray:
    """(T, 2) face-centre displacement not explained by the rotation, in actor pixels."""
    iod = geo.interocular(reference[None])[0]
    centre = landmarks[:, list(_CENTRE_POINTS), :2].mean(axis=1)
    moved = (centre - reference[list(_CENTRE_POINTS), :2].mean(axis=0)) / iod * INTEROCULAR_PX
    # The part of the movement linear in the (slowly varying) angles is what turning the head
    # does to its centre; fitting on smoothed angles keeps blink-sized wiggles out of it.
    slow = np.column_stack([gaussian_smooth(a, 0.15 * fps) for a in angles.T])
    design = np.column_stack([slow, np.ones(len(slow))])
    coef, *_ = np.linalg.lstsq(design, moved, rcond=None)
    return soft_limit(moved - slow @ coef[:3], _SHIFT_LIMIT_PX)


def blink_from_aperture(aperture: np.ndarray, fps: float) -> np.ndarray:
    """Blink (0 open … 1 shut) from a lid aperture track, in three kinds of lid motion:
    - everything slow or shallow (looking down, squinting, half-blinks): the aperture against the
      clip's open level, capped at _MAX_NARROW;
    - blinks (stages.motion.driving.blinks): the dip against the eyes' local open level closes the
      rest of the way, through the whole closing and reopening;
    - eyes held shut for longer than a blink: closed all the way for as long as they are.
    One continuous mapping would turn a narrowing that hovers near the cap into a run of shallow
    false blinks, and hold a squinting face "shut" so its real blinks could not show."""
    usual = geo.open_level(aperture)
    # Only the narrowing is smoothed: a blink one clip frame deep must keep its depth.
    steady = gaussian_smooth(aperture, SMOOTH_S["lids"] * fps)
    closure = _closure(steady, usual)
    blink = np.minimum(closure, _MAX_NARROW)
    in_blink = _blink_closure(aperture, usual, fps)
    for start, stop in blink_spans(aperture, fps):
        extent = slice(*_closing_and_reopening(aperture, start, stop, fps))
        blink[extent] = np.maximum(blink[extent], in_blink[extent])
    for start, stop in true_runs(closure >= 1.0):
        if stop - start > MAX_BLINK_S * fps:
            extent = slice(*_closing_and_reopening(steady, start, stop, fps))
            blink[extent] = np.maximum(blink[extent], closure[extent])
    return blink


def _closure(aperture: np.ndarray, open_level: np.ndarray | float) -> np.ndarray:
    """How far the lids have travelled from `open_level` towards shut (0 … 1), as `aperture` reads."""
    return np.clip((open_level - aperture) / ((1 - _SHUT_FRACTION) * open_level), 0.0, 1.0)


def _blink_closure(aperture: np.ndarray, usual: float, fps: float) -> np.ndarray:
    """The lids during a blink: the eyes' local narrowing, and the dip below it closing the rest."""
    local_open = np.minimum(local_open_level(aperture, fps), usual)
    narrow = np.minimum(_closure(local_open, usual), _MAX_NARROW)
    return narrow + (1.0 - narrow) * _closure(aperture, local_open)


def _closing_and_reopening(aperture: np.ndarray, start: int, stop: int, fps: float) -> tuple[int, int]:
    """The blink dipping below at [start, stop), widened to its closing and reopening: as far as
    the aperture keeps rising away from the dip, at most _BLINK_EDGE_S each side (so a neighbouring
    dip that is no blink is never drawn in)."""
    edge = int(np.ceil(_BLINK_EDGE_S * fps))
    first, end = start, stop
    while first > max(0, start - edge) and aperture[first - 1] >= aperture[first]:
        first -= 1
    while end < min(len(aperture), stop + edge) and aperture[end] >= aperture[end - 1]:
        end += 1
    return first, end


def plan_angles(lp_angles: np.ndarray) -> dict[str, np.ndarray]:
    """The planner's head curves from (T, 3) yaw, pitch, roll in LivePortrait's (and the mesh's) signs."""
    return {"head_yaw_deg": lp_angles[:, 0] * PLAN_TO_LP_SIGN["yaw"],
            "head_pitch_deg": lp_angles[:, 1] * PLAN_TO_LP_SIGN["pitch"],
            "head_roll_deg": lp_angles[:, 2] * PLAN_TO_LP_SIGN["roll"]}


def _lid_curves(landmarks: np.ndarray, fps: float) -> dict[str, np.ndarray]:
    aperture = geo.eye_aperture(landmarks)
    usual = geo.open_level(aperture)
    brow = geo.brow_height(landmarks)
    return {
        "blink": blink_from_aperture(aperture, fps),
        "eye_wide": np.clip((aperture - usual) / (_WIDE_FRACTION * usual), 0.0, 1.0),
        "brow": np.clip((brow - np.median(brow)) / _BROW_RANGE, -1.0, 1.0),
    }


def _mouth_curves(landmarks: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    gap, width = geo.mouth_gap(landmarks), geo.mouth_width(landmarks)
    relative_width = width / geo.mouth_width(reference[None])[0] - 1.0
    lift = geo.corner_lift(landmarks)
    return {
        "jaw_open": np.clip(gap / _JAW_RANGE, 0.0, 1.0),
        "lips_closed": np.clip(1.0 - gap / _CLOSED_GAP, 0.0, 1.0),
        "lip_width": np.clip(relative_width / _WIDTH_RANGE, -1.0, 1.0),
        "lip_round": np.clip(-relative_width / _WIDTH_RANGE, 0.0, 1.0),
        "smile": np.clip((lift - geo.corner_lift(reference[None])[0]) / _SMILE_RANGE, 0.0, 1.0),
    }


def _smoothed(curves: dict[str, np.ndarray], fps: float) -> dict[str, np.ndarray]:
    groups = {"eye_wide": "lids", "brow": "face", "shift_x_px": "shift", "shift_y_px": "shift",
              **{name: "mouth" for name in MOUTH_CURVES}}
    # The blink curve comes smoothed where it should be (blink_from_aperture).
    return {name: values if name == "blink" else gaussian_smooth(values, SMOOTH_S[groups.get(name, "pose")] * fps)
            for name, values in curves.items()}


def motion_from_video(video: TrackedVideo) -> DrivingMotion:
    """The plan curves a tracked driving video performs, relative to its first neutral frame."""
    landmarks = video.landmarks
    ref = neutral_frame(landmarks)
    reference = landmarks[ref]
    lp_angles = geo.head_rotation_deg(landmarks, reference)  # yaw, pitch, roll in LivePortrait's signs
    shift = _translation_px(landmarks, reference, lp_angles, video.fps)
    curves = {
        **plan_angles(lp_angles),
        "shift_x_px": shift[:, 0],
        "shift_y_px": shift[:, 1],
        **_lid_curves(landmarks, video.fps),
        **_mouth_curves(landmarks, reference),
    }
    return DrivingMotion(video.fps, _smoothed(curves, video.fps), ref,
                         {"kind": "video", "frames": video.n_frames, "face_found": round(float(video.found.mean()), 3)})
