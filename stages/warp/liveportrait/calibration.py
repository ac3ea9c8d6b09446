"""How plan curves (0…1) map onto LivePortrait's driving inputs, measured on real motion.

LivePortrait's lip and eye retargeting MLPs take *ratios* measured on the driving face: the lip
ratio (inner-lip gap over mouth width) and the eye ratio (lid gap over eye width). A motion plan
speaks in normalised curves instead, so the backend needs the ratios a real face reaches. They are
measured on the LivePortrait motion templates in ../shared/motion_templates (extracted from real
videos; `measure_calibration` recomputes everything below from that folder, and a test checks
that the constants still match it).

Numbers (pooled over the templates that carry ratios: d1, d2, d5, d7, d8 — 633 frames):
- lip ratio: closed-mouth frames (ratio < 0.02) have a median of 0.0027 → LIP_RATIO_CLOSED.
- eye ratio (both eyes pooled): open frames (> 0.1) have a median of 0.299 → EYE_RATIO_OPEN;
  closed frames (< 0.05) a median of 0.013 → EYE_RATIO_CLOSED; the 99th percentile, 0.568, is
  the widest eye seen → EYE_RATIO_WIDE.
- speech: talking.npz (real speech, 100 frames at 20 fps) carries no ratios, so its mouth opening
  is read through the expression coordinate that tracks the lip ratio best in the templates that
  have both: keypoint 19, y (pooled within-template correlation r = 0.77; slope 4.86 ratio units
  per exp unit). Talking's 5th–95th percentile span of that coordinate (0.0776) gives a speech
  mouth opening of 4.86 × 0.0776 = 0.377 above closed → LIP_RATIO_OPEN = 0.380: what a plan's
  jaw_open = 1 asks for.
- smile: the laugh template's expression at its peak (frames in the top quartile of ‖Δexp‖ from
  its first frame, mean Δexp 0.069) minus its component along talking's first principal direction
  (the speech jaw, 85 % of talking's expression variance), so a smile lifts the mouth corners without opening
  the jaw that the lip MLP already drives. Norm 0.026 → SMILE_EXP_DELTA (21 × 3), for plan smile = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import StageInputError

LIP_CLOSED_BELOW = 0.02
"""Lip ratios under this count as a closed mouth (the closed cluster sits at 0.001–0.007)."""
EYE_OPEN_ABOVE = 0.1
EYE_CLOSED_BELOW = 0.05
"""Eye ratios split cleanly: 136 of 1266 eye samples are under 0.02 (closed), 1113 above 0.1 (open)."""
EYE_WIDE_PERCENTILE = 99.0
SPEECH_SPAN_PERCENTILES = (5.0, 95.0)
"""The speech mouth range excludes the extreme 5 % at each end (single-frame tracking spikes)."""
SMILE_PEAK_QUANTILE = 0.75
NUM_KP = 21


@dataclass(frozen=True)
class Calibration:
    """Ratio ranges and expression directions that turn plan curves into LivePortrait inputs."""

    lip_ratio_closed: float
    lip_ratio_open: float
    eye_ratio_closed: float
    eye_ratio_open: float
    eye_ratio_wide: float
    smile_exp_delta: tuple[float, ...]  # 63 values, (21, 3) keypoint-major, for smile = 1
    lip_exp_coordinate: tuple[int, int] = (19, 1)  # (keypoint, axis) that tracks the lip ratio
    lip_ratio_per_exp: float = 0.0  # regression slope along that coordinate (documentation)

    def smile_delta(self) -> np.ndarray:
        """The smile expression delta as a (21, 3) float32 array."""
        return np.asarray(self.smile_exp_delta, dtype=np.float32).reshape(NUM_KP, 3)


_SMILE = (
    0.0031, -0.0046, -0.0000, -0.0086, 0.0061, 0.0000, -0.0016, 0.0080, -0.0000,
    0.0004, -0.0007, -0.0000, 0.0028, -0.0050, -0.0000, -0.0032, 0.0007, -0.0000,
    -0.0000, -0.0000, 0.0000, -0.0006, -0.0029, 0.0000, -0.0000, 0.0000, -0.0000,
    -0.0001, 0.0000, 0.0000, -0.0028, -0.0023, 0.0006, -0.0023, 0.0026, 0.0000,
    0.0000, 0.0000, -0.0000, -0.0005, -0.0021, -0.0000, 0.0042, -0.0065, 0.0000,
    -0.0002, -0.0021, 0.0000, -0.0008, 0.0002, 0.0000, 0.0002, 0.0013, 0.0001,
    -0.0000, 0.0000, -0.0000, -0.0078, 0.0054, -0.0089, 0.0058, -0.0109, -0.0001,
)

CALIBRATION = Calibration(
    lip_ratio_closed=0.0027,
    lip_ratio_open=0.380,
    eye_ratio_closed=0.0131,
    eye_ratio_open=0.2985,
    eye_ratio_wide=0.568,
    smile_exp_delta=_SMILE,
    lip_exp_coordinate=(19, 1),
    lip_ratio_per_exp=4.86,
)
"""The measured calibration (see the module docstring for where each number comes from)."""


def _load(folder: Path, name: str) -> dict[str, np.ndarray]:
    path = folder / f"{name}.npz"
    if not path.is_file():
        raise StageInputError("liveportrait.calibration", f"motion template {path} not found")
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}


def _lip_regression(templates: list[dict[str, np.ndarray]]) -> tuple[tuple[int, int], float, float]:
    """The (kp, axis) whose exp best tracks the lip ratio within templates, its r and slope.

    Each template is centred first (fixed effects): identities differ in their resting exp, and
    only changes within a clip say how the ratio follows the expression.
    """
    ratio = np.concatenate([t["lip_close_ratio"].reshape(-1) - t["lip_close_ratio"].mean() for t in templates])
    exp = np.concatenate([t["exp"].reshape(len(t["exp"]), -1) - t["exp"].reshape(len(t["exp"]), -1).mean(0)
                          for t in templates])
    centred = exp - exp.mean(0)
    denom = np.linalg.norm(centred, axis=0) * np.linalg.norm(ratio - ratio.mean())
    r = np.where(denom > 0, centred.T @ (ratio - ratio.mean()) / np.maximum(denom, 1e-12), 0.0)
    best = int(np.argmax(np.abs(r)))
    slope = float(centred[:, best] @ (ratio - ratio.mean()) / (centred[:, best] @ centred[:, best]))
    return (best // 3, best % 3), float(r[best]), slope


def measure_calibration(folder: str | Path) -> tuple[Calibration, dict[str, float]]:
    """Recompute the calibration from a motion-template folder; also returns the diagnostics."""
    folder = Path(folder)
    with_ratios = [t for t in (_load(folder, p.stem) for p in sorted(folder.glob("*.npz")))
                   if "lip_close_ratio" in t and "eye_close_ratio" in t]
    if not with_ratios:
        raise StageInputError("liveportrait.calibration", f"no template in {folder} carries lip/eye ratios")
    lip = np.concatenate([t["lip_close_ratio"].reshape(-1) for t in with_ratios])
    eye = np.concatenate([t["eye_close_ratio"].reshape(-1) for t in with_ratios])
    (kp, axis), r, slope = _lip_regression(with_ratios)

    talking = _load(folder, "talking")["exp"].reshape(-1, NUM_KP * 3)
    lo, hi = np.percentile(talking[:, kp * 3 + axis], SPEECH_SPAN_PERCENTILES)
    lip_closed = float(np.median(lip[lip < LIP_CLOSED_BELOW]))
    lip_open = lip_closed + abs(slope) * float(hi - lo)

    # Smile: the laugh's peak expression with the speech-jaw direction projected out.
    centred = talking - talking.mean(0)
    jaw_direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    laugh = _load(folder, "laugh")["exp"].reshape(-1, NUM_KP * 3)
    delta = laugh - laugh[0]
    norms = np.linalg.norm(delta, axis=1)
    peak = delta[norms >= np.quantile(norms, SMILE_PEAK_QUANTILE)].mean(0)
    smile = peak - (peak @ jaw_direction) * jaw_direction

    calibration = Calibration(
        lip_ratio_closed=lip_closed, lip_ratio_open=lip_open,
        eye_ratio_closed=float(np.median(eye[eye < EYE_CLOSED_BELOW])),
        eye_ratio_open=float(np.median(eye[eye > EYE_OPEN_ABOVE])),
        eye_ratio_wide=float(np.percentile(eye, EYE_WIDE_PERCENTILE)),
        smile_exp_delta=tuple(float(v) for v in smile), lip_exp_coordinate=(kp, axis),
        lip_ratio_per_exp=abs(slope))
    diagnostics = {"frames_with_ratios": float(len(lip)), "lip_exp_r": r, "speech_exp_span": float(hi - lo),
                   "laugh_peak_norm": float(np.linalg.norm(peak)), "smile_norm": float(np.linalg.norm(smile)),
                   "jaw_variance_share": float(np.linalg.svd(centred, compute_uv=False)[0] ** 2
                                               / (np.linalg.svd(centred, compute_uv=False) ** 2).sum())}
    return calibration, diagnostics
