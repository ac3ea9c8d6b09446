"""How far the mesh warp turns a head: commanded sweeps read back with two measures (issue P12).

    .venv/bin/python benchmarks/bench_head_sweep.py                        # sample actor + every shared face
    .venv/bin/python benchmarks/bench_head_sweep.py --faces s5.jpg --real-clips d9.mp4 d12.mp4
    .venv/bin/python benchmarks/bench_head_sweep.py --faces --scale 0.3   # small turns, sample only
    .venv/bin/python benchmarks/bench_head_sweep.py --faces --real-clips d9.mp4 --real-flow   # MediaPipe on a real head

For each face (the slot's framing, stages.image.load_actor), one axis at a time is swept
0 → +limit → −limit → 0 (yaw ±25°, pitch ±15°, roll ±10°), rendered with the mesh warp and tracked
with MediaPipe (--scale f sweeps f × those angles: how the gains depend on the turn's size). Per axis it prints the rendered angle against the commanded (gain = least-squares
slope through the sweep, and Pearson r), read two ways:
- rigid: the rigid fit of the skull's points (stages.motion.driving.face_geometry.head_rotation_deg,
  the same reading that turns driving clips into motion);
- parallax: 2-D only — the nose tip against the eye line over the eye distance (yaw: along it,
  pitch: across it), turned into an angle with the rate real heads show: the real clips in
  ../shared/driving are tracked the same way and their nose travel per unit sine of their own
  rigid-fit angle is the calibration (printed first). Roll: the eye line's angle in the picture.
and two MediaPipe-free readings of the same parallax (is a low gain the render's or the judge's?):
- flow: the actor's own nose-tip and eye-corner points carried from the rest frame into each
  rendered frame by dense optical flow (stages.verify.flow_parallax): what the picture did;
- field: where the face layer's forward field puts those points: what the warp was told to do;
and "MP/flow", how much of the picture's nose travel MediaPipe's nose tip follows (the slope of
its parallax on the flow's: 1 when the landmarks move with the pixels); and "shuffled", the rigid
fit's gain with the frames tracked out of order (MediaPipe's tracking mode lags behind a warp
turning by small steps; a real clip reads the same in either order).
It also prints the warp's fold-free limit per axis and the least Jacobian determinant of the head
layer's field over the sweep (> 0: no fold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from stages.motion.driving import face_geometry as geo  # noqa: E402
from stages.types import PLAN_TO_LP_SIGN  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
SWEEPS_DEG = {"yaw": 25.0, "pitch": 15.0, "roll": 10.0}
_AXIS = {"yaw": 0, "pitch": 1, "roll": 2}
_STEPS = 12


def sweep_angles(limit_deg: float) -> np.ndarray:
    """0 → +limit → −limit → 0, evenly stepped (the first frame is the rest pose)."""
    up = np.linspace(0.0, limit_deg, _STEPS // 2 + 1)
    across = np.linspace(limit_deg, -limit_deg, _STEPS + 1)[1:]
    back = np.linspace(-limit_deg, 0.0, _STEPS // 2 + 1)[1:]
    return np.concatenate([up, across, back])


SMALL_TURN_DEG = 6.0
"""--real-flow compares MediaPipe with the flow on a real clip's frames turned less than this
(further, a real turn hides the nose's far flank and the flow from the rest frame loses it).
Measured, the flow is no judge of real footage: from one rest frame across hundreds of frames of
a head that also slides, scales and changes light, it reads d3's and d14's small yaws at half of
MediaPipe's travel and d9's at 0.88 (MP/flow 2.2, 2.05, 1.14). It is an instrument for renders,
where the warp is the only motion and the light does not change."""


def _clip_frames(path: Path) -> np.ndarray:
    """(T, H, W, 3) the frames track_video tracks (every frame_step-th, upright)."""
    from stages.motion.driving.video import frame_step, open_video, upright

    with open_video(path) as (container, stream, fps):
        step = frame_step(fps)
        return np.array([upright(f.to_ndarray(format="rgb24"), f.rotation)
                         for i, f in enumerate(container.decode(stream)) if i % step == 0])


def _real_flow_line(frames: np.ndarray, lm: np.ndarray, rest: int, angles: np.ndarray, k: int) -> str:
    """MediaPipe's and the flow's nose travel per unit sine on a real clip's small turns, and the
    rigid fit's angle with the frames tracked out of order, on the angle tracked in order."""
    from stages.verify.flow_parallax import flow_parallax
    from stages.verify.motion_transfer import track_out_of_order

    small = np.abs(angles[:, k]) < SMALL_TURN_DEG
    sine = np.sin(np.radians(angles[small, k]))
    mp = np.polyfit(sine, geo.nose_parallax(lm)[small, k], 1)[0]
    flow = np.polyfit(sine, flow_parallax(frames, lm[rest], rest)[small, k], 1)[0]
    shuffled = track_out_of_order(frames)
    ok = np.isfinite(shuffled[:, 0, 0])
    out_of_order = geo.head_rotation_deg(shuffled[ok], lm[rest])[:, k]
    return (f"    small turns (|angle| < {SMALL_TURN_DEG:.0f}°, {small.sum()} frames): MediaPipe {abs(mp):.3f}, "
            f"flow {abs(flow):.3f} per unit sine, MP/flow {mp / flow:.2f}; tracked out of order: "
            f"{np.polyfit(angles[ok, k], out_of_order, 1)[0]:.2f} of the angle in order")


def real_parallax_rate(clips: list[Path], with_flow: bool = False) -> dict[str, float]:
    """Median over real clips of the nose's travel (eye distances) per unit sine of the rigid-fit
    angle; with_flow also prints the flow's reading of the same clips' small turns."""
    from stages.motion.driving.motion import neutral_frame
    from stages.motion.driving.video import track_video

    rates: dict[str, list[float]] = {"yaw": [], "pitch": []}
    for clip in clips:
        lm = track_video(clip).landmarks
        rest = neutral_frame(lm)
        angles = geo.head_rotation_deg(lm, lm[rest])
        parallax = geo.nose_parallax(lm)
        frames = None
        for axis in rates:
            k = _AXIS[axis]
            slope = np.polyfit(np.sin(np.radians(angles[:, k])), parallax[:, k], 1)[0]
            rates[axis].append(abs(float(slope)))
            print(f"  {clip.name:<8} {axis:<5} nose travel {abs(slope):.3f} per unit sine "
                  f"(rigid-fit range {angles[:, k].min():+.1f}…{angles[:, k].max():+.1f}°)")
            if with_flow:
                frames = frames if frames is not None else _clip_frames(clip)
                print(_real_flow_line(frames, lm, rest, angles, k))
    return {axis: float(np.median(values)) for axis, values in rates.items()}


def _gain_r(commanded: np.ndarray, rendered: np.ndarray) -> tuple[float, float]:
    return float(np.polyfit(commanded, rendered, 1)[0]), float(np.corrcoef(commanded, rendered)[0, 1])


def _as_angle(travel: np.ndarray, rate: float, sign_ref: np.ndarray) -> np.ndarray:
    """Nose travel (eye distances, relative to the rest frame) → degrees at real heads' `rate`
    per unit sine, its sign aligned with `sign_ref` (the picture's axes fix the travel's sign)."""
    angle = np.degrees(np.arcsin(np.clip((travel - travel[0]) / rate, -1.0, 1.0)))
    return angle * np.sign(np.dot(angle, sign_ref) or 1.0)


def _readings(axis: str, lm: np.ndarray, rates: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(rigid, parallax) angles in the plan's signs, relative to the sweep's first (rest) frame."""
    rigid = geo.head_rotation_deg(lm, lm[0])[:, _AXIS[axis]] * PLAN_TO_LP_SIGN[axis]
    if axis == "roll":
        flat = geo.eye_line_roll_deg(lm)
        return rigid, (flat - flat[0]) * PLAN_TO_LP_SIGN["roll"]
    return rigid, _as_angle(geo.nose_parallax(lm)[:, _AXIS[axis]], rates[axis], rigid)


def _roll_of_points(points: np.ndarray) -> np.ndarray:
    """(T,) the eye line's angle (degrees, plan's sign) from (T, 5, 2) flow_parallax.POINTS, relative to frame 0."""
    line = (points[:, 3] + points[:, 4] - points[:, 1] - points[:, 2]) / 2
    flat = np.degrees(np.arctan2(line[:, 1], line[:, 0]))
    return (flat - flat[0]) * PLAN_TO_LP_SIGN["roll"]


def _mediapipe_free(axis: str, points: np.ndarray, rates: dict[str, float], commanded: np.ndarray) -> np.ndarray:
    """The angle read from flow_parallax.POINTS' positions (T, 5, 2): the nose's parallax as an
    angle (yaw, pitch) or the eye line's (roll)."""
    from stages.verify.flow_parallax import parallax_of_points

    if axis == "roll":
        return _roll_of_points(points)
    return _as_angle(parallax_of_points(points)[:, _AXIS[axis]], rates[axis], commanded)


def _followed(axis: str, lm: np.ndarray, flow_points: np.ndarray) -> str:
    """How much of the picture's nose travel MediaPipe's nose follows: the slope of its parallax
    on the flow's (1: the landmarks move with the pixels; yaw and pitch only)."""
    from stages.verify.flow_parallax import parallax_of_points

    if axis == "roll":
        return "-"
    k = _AXIS[axis]
    return f"{np.polyfit(parallax_of_points(flow_points)[:, k], geo.nose_parallax(lm)[:, k], 1)[0]:.2f}"


def _shuffled_rigid_gain(axis: str, slab: np.ndarray, commanded: np.ndarray, rates: dict[str, float]) -> str:
    """The rigid-fit gain with the sweep's frames tracked out of order (motion_transfer.track_out_of_order):
    what MediaPipe reads without its tracking mode's lag behind a slow turn."""
    from stages.verify.motion_transfer import track_out_of_order

    lm = track_out_of_order(slab)
    found = np.isfinite(lm[:, 0, 0])
    if not found[0] or found.sum() < len(found) - 2:
        return "lost"
    return f"{_gain_r(commanded[found], _readings(axis, lm[found], rates)[0])[0]:.2f}"


def _field_points(prepared, plan, start_px: np.ndarray) -> np.ndarray:
    """(T, 5, 2) where the face layer's forward field puts `start_px` (5, 2) on each frame of
    `plan`: the warp's own answer, exact up to the render's inversion and resampling."""
    from stages.types import FRAME_SIZE_PX
    from stages.warp.mesh.features import N_FEATURES, fill_features

    features = np.zeros((plan.n_frames, N_FEATURES), np.float32)
    fill_features(plan, 0, plan.n_frames, FRAME_SIZE_PX, features)
    prepared.pose_limits.apply(features)
    layer = prepared.face_layer
    out = np.empty((plan.n_frames,) + start_px.shape)
    for t, row in enumerate(features):
        field = (row.astype(np.float64) @ layer.basis).reshape(layer.grid.shape + (2,))
        out[t] = start_px + [layer.grid.displacement_at(field, p) for p in start_px]
    return out


def sweep_face(face: str | None, rates: dict[str, float], scale: float = 1.0) -> list[str]:
    """One printed line per axis for one face."""
    from stages.image import load_actor
    from stages.image.face import track_landmarks
    from stages.verify.flow_parallax import POINTS, track_points
    from stages.warp.mesh import MeshWarpBackend
    from stages.warp.mesh.bases import angle_limit_deg, least_area
    from tests.stages.warp.mesh.conftest import make_plan, new_slab

    actor = load_actor(image=face)
    prepared = MeshWarpBackend().prepare(actor)
    rest_px = np.asarray(actor.landmarks_px, np.float64)[list(POINTS), :2]
    name = Path(face).name if face else "sample"
    lines = []
    for axis, full in SWEEPS_DEG.items():
        limit = full * scale
        commanded = sweep_angles(limit)
        plan = make_plan(len(commanded), **{f"head_{axis}_deg": commanded})
        slab = new_slab(len(commanded))
        prepared.render(plan, slice(0, len(commanded)), slab)
        # MediaPipe-free: the actor's own points carried by optical flow, and by the warp's field.
        flow_points = track_points(slab, actor.landmarks_px)
        flow = _gain_r(commanded, _mediapipe_free(axis, flow_points, rates, commanded))
        field = _gain_r(commanded, _mediapipe_free(axis, _field_points(prepared, plan, rest_px), rates, commanded))
        lm = track_landmarks(slab)
        found = ~np.isnan(lm[:, 0, 0])
        if not found[0] or found.sum() < len(found) - 2:
            lines.append(f"{name:<8} {axis:<5} face tracked in {found.sum()} of {len(found)} frames: not judged")
            continue
        rigid, parallax = _readings(axis, lm[found], rates)
        g1, r1 = _gain_r(commanded[found], rigid)
        g2, r2 = _gain_r(commanded[found], parallax)
        followed = _followed(axis, lm[found], flow_points[found])
        shuffled = _shuffled_rigid_gain(axis, slab, commanded, rates)
        lines.append(f"{name:<8} {axis:<5} ±{limit:<4.1f} {g1:6.2f} {r1:6.3f}   {g2:6.2f} {r2:6.3f}   "
                     f"{flow[0]:6.2f} {flow[1]:6.3f}   {field[0]:6.2f}  {followed:>7}  {shuffled:>8}   "
                     f"{angle_limit_deg(prepared.pose_limits, axis):5.1f}° "
                     f"{least_area(prepared.face_layer, plan, prepared.pose_limits):6.2f}")
    return lines


def main() -> None:
    """Print the calibration, then one line per face and axis."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", nargs="*", default=None, help="file names in ../shared/faces (default: all)")
    parser.add_argument("--real-clips", nargs="*", default=None,
                        help="file names in ../shared/driving for the calibration (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="sweep this fraction of each axis's angle (default 1)")
    parser.add_argument("--real-flow", action="store_true",
                        help="also read the real clips' small turns by optical flow, and track them out of order")
    args = parser.parse_args()
    clips = [SHARED / "driving" / c for c in args.real_clips] if args.real_clips else sorted(
        (SHARED / "driving").glob("*.mp4"))
    print("real heads (calibration of the parallax reading):")
    rates = real_parallax_rate(clips, args.real_flow)
    print(f"  median: yaw {rates['yaw']:.3f}, pitch {rates['pitch']:.3f} eye distances per unit sine\n")
    faces = [None] + ([str(SHARED / "faces" / f) for f in args.faces] if args.faces is not None
                      else [str(p) for p in sorted((SHARED / "faces").glob("*.jpg"))])
    print(f"{'face':<8} {'axis':<5} {'sweep':<5} {'rigid gain':>10} {'r':>6}   {'parallax':>6} {'r':>6}   "
          f"{'flow':>6} {'r':>6}   {'field':>6}  {'MP/flow':>7}  {'shuffled':>8}   {'limit':>6} {'min det':>7}")
    for face in faces:
        try:
            for line in sweep_face(face, rates, args.scale):
                print(line)
        except Exception as exc:  # a face the tracker refuses (e.g. no human face) is reported, not fatal
            print(f"{Path(face).name if face else 'sample':<8} not rendered: {exc}")


if __name__ == "__main__":
    main()
