"""How shut a blink reads on MediaPipe: the mesh warp's lids on every shared face and the sample actor.

    .venv/bin/python benchmarks/bench_blinks.py                  # every face in ../shared/faces + the sample
    .venv/bin/python benchmarks/bench_blinks.py --faces s5.jpg --save-dir /tmp/blinks
    .venv/bin/python benchmarks/bench_blinks.py --clips d9.mp4 d11.mp4 d12.mp4   # and real lids

Per face, a plan of open eyes then a blink (closing over 3 frames, shut for 3, opening over 3)
is rendered through the mesh warp and tracked with MediaPipe. The eye aperture is
stages.motion.driving.face_geometry.eye_aperture — lid gap (159/158/160 to 145/153/144 and the
other eye's) over the eye's width, both eyes averaged — the same reading the driving-clip
judge uses (a real open eye ≈ 0.3, a real shut one ≈ 0.05–0.07 on the shared clips). Printed:
the open aperture (median of the open frames), the shut one (the deepest frame of the blink),
its reading in the picture's plane (MediaPipe's depth guess left out: "2-D"), their ratio, and
the time to prepare the face and render the plan. With --clips, the same readings at the most
shut frame of real driving clips. With --save-dir, the open and
the deepest frame's eyes are written side by side (×3) as a PNG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from stages.motion.driving.face_geometry import eye_aperture  # noqa: E402
from stages.types import FRAME_SIZE_PX, MotionPlan  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
OPEN_FRAMES = 4
BLINK = np.concatenate([np.zeros(OPEN_FRAMES), [0.33, 0.67], np.ones(4), [0.67, 0.33], np.zeros(2)])
_CURVES = ("jaw_open", "lip_width", "lip_round", "lips_closed", "eye_wide", "brow", "smile",
           "head_yaw_deg", "head_pitch_deg", "head_roll_deg", "shift_x_px", "shift_y_px")


def blink_plan(blink: np.ndarray, fps: int = 24) -> MotionPlan:
    """A plan with the given blink curve and every other curve at rest."""
    rest = {name: np.zeros(len(blink), np.float32) for name in _CURVES}
    return MotionPlan(fps=fps, blink=np.asarray(blink, np.float32), **rest)


def render_blink(face: Path | None) -> tuple[np.ndarray, float]:
    """(frames, seconds to prepare and render) of BLINK on `face` (None: the sample actor)."""
    from stages.image.library import load_actor
    from stages.warp.mesh import MeshWarpBackend

    start = time.perf_counter()
    prepared = MeshWarpBackend().prepare(load_actor(face))
    frames = np.zeros((len(BLINK), FRAME_SIZE_PX, FRAME_SIZE_PX, 3), np.uint8)
    prepared.render(blink_plan(BLINK), slice(0, len(BLINK)), frames)
    return frames, time.perf_counter() - start


def apertures(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,) eye aperture as the repo reads it (3-D landmark distances) and in the picture's plane."""
    flat = landmarks.copy()
    flat[..., 2] = 0.0  # MediaPipe's depth guess moves the 3-D reading, not the picture
    return eye_aperture(landmarks), eye_aperture(flat)


def lid_figures(frames: np.ndarray) -> tuple[float, float, float, int]:
    """(open aperture, shut aperture at the blink's deepest frame, its 2-D reading, that frame)."""
    from stages.image.face import track_landmarks

    aperture, flat = apertures(track_landmarks(frames))
    shut_ids = np.flatnonzero(BLINK >= 1.0)
    deepest = int(shut_ids[np.nanargmin(aperture[shut_ids])])
    return float(np.nanmedian(aperture[:OPEN_FRAMES])), float(aperture[deepest]), float(flat[deepest]), deepest


def real_shut(path: Path) -> tuple[float, float, float]:
    """A driving clip's (open level, shut aperture, its 2-D reading) at its most shut frame."""
    import av

    from stages.image.face import track_landmarks
    from stages.motion.driving.face_geometry import open_level

    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    aperture, flat = apertures(track_landmarks(frames))
    i = int(np.nanargmin(aperture))
    return open_level(aperture[np.isfinite(aperture)]), float(aperture[i]), float(flat[i])


def _save_eyes(path: Path, frames: np.ndarray, deepest: int) -> None:
    """The open and the deepest frame's eye band, side by side, ×3."""
    import cv2

    from stages.image.face import detect_landmarks

    lm = detect_landmarks(frames[0])
    cx, cy = lm[[33, 263], 0].mean(), lm[[33, 263], 1].mean()
    span = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
    y0, y1 = int(cy - 0.35 * span), int(cy + 0.3 * span)
    x0, x1 = int(cx - 0.8 * span), int(cx + 0.8 * span)
    crops = [frames[i, max(y0, 0):y1, max(x0, 0):x1] for i in (0, deepest)]
    band = np.concatenate(crops, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(band, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)[..., ::-1])


def main() -> None:
    """Print one row per face."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", nargs="*", help="file names in ../shared/faces (default: all, plus the sample)")
    parser.add_argument("--clips", nargs="*", default=[],
                        help="driving clips (../shared/driving) to read real shut lids on")
    parser.add_argument("--save-dir", type=Path)
    args = parser.parse_args()
    faces = ([SHARED / "faces" / n for n in args.faces] if args.faces is not None
             else [None] + sorted((SHARED / "faces").glob("*.jpg")))
    print(f"{'face':<8} {'open':>6} {'shut':>6} {'shut 2-D':>8} {'shut/open':>9} {'render s':>8}")
    shut_all = []
    for face in faces:
        name = "sample" if face is None else face.stem
        try:
            frames, seconds = render_blink(face)
        except Exception as exc:  # noqa: BLE001 - a refused portrait is a row of the table
            print(f"{name:<8} refused: {getattr(exc, 'message', exc)}")
            continue
        open_ap, shut_ap, shut_flat, deepest = lid_figures(frames)
        shut_all.append(shut_ap)
        print(f"{name:<8} {open_ap:6.3f} {shut_ap:6.3f} {shut_flat:8.3f} {shut_ap / open_ap:9.2f} {seconds:8.2f}",
              flush=True)
        if args.save_dir is not None:
            _save_eyes(args.save_dir / f"blink-{name}.png", frames, deepest)
    if shut_all:
        print(f"{'worst':<8} {'':>6} {max(shut_all):6.3f}")
    for clip in args.clips:  # real lids: the clip's most shut frame
        open_ap, shut_ap, shut_flat = real_shut(SHARED / "driving" / clip)
        print(f"{Path(clip).stem:<8} {open_ap:6.3f} {shut_ap:6.3f} {shut_flat:8.3f} {shut_ap / open_ap:9.2f}",
              flush=True)


if __name__ == "__main__":
    main()
