"""How shut a blink reads on MediaPipe: the mesh warp's lids on every shared face and the sample actor.

    .venv/bin/python benchmarks/bench_blinks.py                  # every face in ../shared/faces + the sample
    .venv/bin/python benchmarks/bench_blinks.py --faces s5.jpg --save-dir /tmp/blinks
    .venv/bin/python benchmarks/bench_blinks.py --clips d9.mp4 d11.mp4 d12.mp4   # and real lids

Per face, a plan of open eyes then a blink (closing over 3 frames, shut for 3, opening over 3)
is rendered through the mesh warp and tracked with MediaPipe. The eye aperture is
stages.motion.driving.face_geometry.eye_aperture — lid gap (159/158/160 to 145/153/144 and the
other eye's) over the eye's width, both eyes averaged — the same reading the driving-clip
judge uses (a real open eye ≈ 0.3, a real shut one ≈ 0.05–0.07 on the shared clips). Printed,
at the blink's deepest frame against the open frames:

- open, shut: the aperture (open: median of the open frames); shut/open their ratio;
- shut 2-D: the shut aperture in the picture's plane (MediaPipe's depth guess left out);
- floor: what MediaPipe's depth guess alone gives (the lid points' z offset: the same open or
  shut, the lowest the 3-D reading can go);
- across: the 2-D gap across the eye alone (perpendicular to the corner-to-corner line). The
  rest of the 2-D reading is the pairs' stagger along the eye: MediaPipe's upper points sit
  0.01–0.12 of the width beside the lower ones on an open eye; a real shut lid pulls them to
  ≈ 0.02 (d9, d12), ours keep 0.01–0.13;
- the second instrument, pixels only: showing, the share of the open eye's opening (its lid
  contour on the open frame) whose pixels are unchanged at the shut frame (eye still visible);
  band o / band s, the darkest band's height down the eye's middle columns over the eye width
  (iris and lashes open, the lash line shut; soft real lines read wide);
- rise: how far the lower lid's middle points (145/153/144, 374/380/373) rise at the shut frame
  against the open ones, over the eye width (real clips: the median over the clip's blinks, each
  laid by a similarity fit of the nose and face sides on its open frames within ±1 s);
- render s: preparing the face and rendering the plan.

With --clips, the same readings at the most shut frame of real driving clips (band o at the
most open one), then every blink's most shut reading (median, range, how many over 0.08) and
its depth floor. With --save-dir, the open and the deepest frame's eyes are written side by side
(×3) as a PNG.
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
_CORNERS = ((33, 133), (362, 263))
_UPPER = ((159, 158, 160), (386, 385, 387))  # as face_geometry.eye_aperture reads them
_LOWER = ((145, 153, 144), (374, 380, 373))
_RINGS = ((33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
          (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249))
_RIGID = (1, 2, 4, 5, 195, 197, 98, 327, 234, 454, 93, 323, 132, 361)  # the nose and the face's sides
_SAME_LEVELS = 6  # a pixel within this many levels of the open frame still shows the open eye
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


def depth_floor(landmarks: np.ndarray) -> np.ndarray:
    """(T,) the part of the aperture MediaPipe's depth guess alone gives: the upper and lower lid
    points' z difference over the eye width, both eyes averaged. Nearly the same open and shut (it
    is the face's shape prior, not the picture's lid), it is the lowest a shut lid can read."""
    floors = []
    for (a, b), upper, lower in zip(_CORNERS, _UPPER, _LOWER):
        dz = np.abs(landmarks[:, list(upper), 2] - landmarks[:, list(lower), 2]).mean(axis=1)
        floors.append(dz / np.linalg.norm(landmarks[:, a] - landmarks[:, b], axis=-1))
    return np.mean(floors, axis=0)


def across_gap(landmarks: np.ndarray) -> np.ndarray:
    """(T,) the lid gap across the eye alone: the upper-to-lower lid points' offset perpendicular
    to the corner-to-corner line, in the picture, over the eye width, both eyes averaged. The
    aperture's other parts: MediaPipe's depth guess (depth_floor) and the pairs' stagger along
    the eye (its upper points sit beside the lower ones, open or shut)."""
    gaps = []
    for (a, b), upper, lower in zip(_CORNERS, _UPPER, _LOWER):
        axis = landmarks[:, b, :2] - landmarks[:, a, :2]
        width = np.linalg.norm(axis, axis=-1)
        normal = np.stack([-axis[:, 1], axis[:, 0]], axis=-1) / width[:, None]
        offset = landmarks[:, list(upper), :2] - landmarks[:, list(lower), :2]
        gaps.append(np.abs((offset * normal[:, None]).sum(axis=-1)).mean(axis=1) / width)
    return np.mean(gaps, axis=0)


def lower_lid_rise(landmarks: np.ndarray, shut: int, open_ids: np.ndarray, fit: bool) -> float:
    """How far the lower lid's middle points rise at frame `shut` against the median of the
    `open_ids` frames, over the eye width, both eyes averaged. With `fit` (a real clip, whose head
    moves) the shut frame is first laid on the open one by a similarity fit of the nose and the
    face's sides; a render's head is still, and there MediaPipe's own mesh shifts on shut frames
    (s5: its forehead points 6–8 px down, s10: the whole mesh), which a fit would read as lid motion."""
    ref = np.nanmedian(landmarks[open_ids, :, :2], axis=0).astype(np.float64)
    laid = landmarks[shut, :, :2].astype(np.float64)
    if fit:
        src, dst = laid[list(_RIGID)], ref[list(_RIGID)]
        ms, md = src.mean(0), dst.mean(0)
        u, sv, vt = np.linalg.svd((src - ms).T @ (dst - md))  # Procrustes: rows map by rot·scale
        flip = np.array([1.0, np.sign(np.linalg.det(u @ vt))])
        laid = (laid - ms) @ (u @ np.diag(flip) @ vt) * float((sv * flip).sum() / ((src - ms) ** 2).sum()) + md
    rises = []
    for (a, b), lower in zip(_CORNERS, _LOWER):
        axis = ref[b] - ref[a]
        width = float(np.linalg.norm(axis))
        up = np.array([axis[1], -axis[0]]) / width
        up = up if up[1] < 0 else -up  # toward the brow: image y decreases
        rises.append(float(((laid[list(lower)] - ref[list(lower)]) @ up).mean()) / width)
    return float(np.mean(rises))


def eye_cover(open_frame: np.ndarray, shut_frame: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float]:
    """The second instrument, from the pixels alone: (share of the open eye's opening — the
    polygon of its lid contour on `landmarks`, the open frame's — that still shows the open eye at
    the shut frame, the darkest band's height over the eye width on the open frame, on the shut one).

    The dark band: down each column of the eye's middle 60 %, the run of pixels darker than half
    way from the column's median to its darkest around that darkest pixel (the iris and lashes on
    an open eye, the lash line on a shut one); the median over the columns."""
    import cv2

    showing, bands = [], ([], [])
    for ring, (a, b) in zip(_RINGS, _CORNERS):
        mask = np.zeros(open_frame.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(landmarks[list(ring), :2]).astype(np.int32)], 1)
        inside = mask > 0
        diff = np.abs(shut_frame.astype(np.int16) - open_frame.astype(np.int16)).max(axis=-1)
        showing.append(float((diff[inside] <= _SAME_LEVELS).mean()))
        width = float(np.linalg.norm(landmarks[a, :2] - landmarks[b, :2]))
        for frame, out in zip((open_frame, shut_frame), bands):
            out.append(_dark_band(frame, landmarks[[a, b], :2], width) / width)
    return float(np.mean(showing)), float(np.mean(bands[0])), float(np.mean(bands[1]))


def _dark_band(frame: np.ndarray, corners: np.ndarray, width: float) -> float:
    """Median height in pixels of the darkest band down the middle columns of an eye."""
    luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    (x0, y0), (x1, y1) = sorted(corners.tolist())
    runs = []
    for x in np.arange(x0 + 0.2 * (x1 - x0), x0 + 0.8 * (x1 - x0)).astype(int):
        yc = int(round(y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-6)))
        col = luma[max(yc - int(0.4 * width), 0):yc + int(0.4 * width), x]
        i = int(np.argmin(col))
        dark = col < 0.5 * (np.median(col) + col[i])
        top, bottom = i, i
        while top > 0 and dark[top - 1]:
            top -= 1
        while bottom < len(col) - 1 and dark[bottom + 1]:
            bottom += 1
        runs.append(bottom - top + 1)
    return float(np.median(runs))


def lid_figures(frames: np.ndarray) -> dict[str, float]:
    """Both instruments at the blink's deepest frame (by MediaPipe's aperture) against the first
    open one: open / shut aperture, the shut one in 2-D, the depth floor, the share of the eye
    still showing and the dark band's height open and shut."""
    from stages.image.face import track_landmarks

    landmarks = track_landmarks(frames)
    aperture, flat = apertures(landmarks)
    shut_ids = np.flatnonzero(BLINK >= 1.0)
    deepest = int(shut_ids[np.nanargmin(aperture[shut_ids])])
    showing, band_open, band_shut = eye_cover(frames[0], frames[deepest], landmarks[0])
    return {"open": float(np.nanmedian(aperture[:OPEN_FRAMES])), "shut": float(aperture[deepest]),
            "shut_2d": float(flat[deepest]), "floor": float(depth_floor(landmarks)[deepest]),
            "across": float(across_gap(landmarks)[deepest]), "showing": showing, "band_open": band_open,
            "band_shut": band_shut, "rise": lower_lid_rise(landmarks, deepest, np.arange(OPEN_FRAMES), fit=False),
            "deepest": deepest}


def real_shut(path: Path) -> dict:
    """A driving clip's readings at its most shut frame (band_open: at its most open one); the
    lower-lid rise as the median over its blinks; every blink's most shut aperture and depth floor."""
    import av

    from stages.image.face import track_landmarks
    from stages.motion.driving.face_geometry import open_level

    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    landmarks = track_landmarks(frames)
    aperture, flat = apertures(landmarks)
    i, o = int(np.nanargmin(aperture)), int(np.nanargmax(aperture))
    level = open_level(aperture[np.isfinite(aperture)])
    blinks, floor = _real_blinks(landmarks, aperture, level), depth_floor(landmarks)
    return {"open": level, "shut": float(aperture[i]),
            "shut_2d": float(flat[i]), "floor": float(floor[i]),
            "across": float(across_gap(landmarks)[i]),
            "band_open": eye_cover(frames[o], frames[o], landmarks[o])[1],
            "band_shut": eye_cover(frames[i], frames[i], landmarks[i])[1],
            "rise": float(np.nanmedian([r for _, r in blinks])) if blinks else float("nan"),
            "blinks": [float(aperture[j]) for j, _ in blinks],
            "blink_floors": [float(floor[j]) for j, _ in blinks]}


def _real_blinks(landmarks: np.ndarray, aperture: np.ndarray, level: float,
                 fps: int = 24) -> list[tuple[int, float]]:
    """(most shut frame, lower-lid rise) of each of a clip's blinks: runs of frames under 0.35 of
    the open aperture, the rise against the open frames (over 0.85 of open) within a second."""
    finite = np.isfinite(aperture)
    shut = np.flatnonzero(finite & (aperture < 0.35 * level))
    blinks, start = [], 0
    for end in np.append(np.flatnonzero(np.diff(shut) > 2) + 1, len(shut)):
        run = shut[start:end]
        start = end
        if len(run) == 0:
            continue
        deepest = int(run[np.argmin(aperture[run])])
        near = np.arange(max(deepest - fps, 0), min(deepest + fps + 1, len(aperture)))
        near = near[finite[near] & (aperture[near] > 0.85 * level)]
        rise = lower_lid_rise(landmarks, deepest, near, fit=True) if len(near) >= 4 else float("nan")
        blinks.append((deepest, rise))
    return blinks


def _row(name: str, f: dict[str, float], seconds: float | None = None) -> str:
    """One printed row of the table."""
    showing = f"{100 * f['showing']:8.0f}%" if "showing" in f else f"{'':>9}"
    tail = f" {seconds:8.2f}" if seconds is not None else ""
    return (f"{name:<8} {f['open']:6.3f} {f['shut']:6.3f} {f['shut_2d']:8.3f} {f['floor']:6.3f} {f['across']:6.3f} "
            f"{f['shut'] / f['open']:9.2f} {showing} {f['band_open']:6.3f} {f['band_shut']:6.3f} {f['rise']:6.3f}{tail}")


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
    print(f"{'face':<8} {'open':>6} {'shut':>6} {'shut 2-D':>8} {'floor':>6} {'across':>6} {'shut/open':>9} {'showing':>9} "
          f"{'band o':>6} {'band s':>6} {'rise':>6} {'render s':>8}")
    shut_all = []
    for face in faces:
        name = "sample" if face is None else face.stem
        try:
            frames, seconds = render_blink(face)
        except Exception as exc:  # noqa: BLE001 - a refused portrait is a row of the table
            print(f"{name:<8} refused: {getattr(exc, 'message', exc)}")
            continue
        figures = lid_figures(frames)
        shut_all.append(figures["shut"])
        print(_row(name, figures, seconds), flush=True)
        if args.save_dir is not None:
            _save_eyes(args.save_dir / f"blink-{name}.png", frames, int(figures["deepest"]))
    if shut_all:
        print(f"{'worst':<8} {'':>6} {max(shut_all):6.3f}")
    for clip in args.clips:  # real lids: the clip's most shut frame
        real = real_shut(SHARED / "driving" / clip)
        print(_row(Path(clip).stem, real), flush=True)
        shut, floors = np.array(real["blinks"]), np.array(real["blink_floors"])
        if len(shut):  # every blink, not only the clip's deepest: how shut a real lid usually reads
            print(f"{'':<8} {len(shut)} blinks: shut median {np.median(shut):.3f} (range {shut.min():.3f}–"
                  f"{shut.max():.3f}, {(shut > 0.08).sum()} over 0.08), floor median {np.median(floors):.3f}")


if __name__ == "__main__":
    main()
