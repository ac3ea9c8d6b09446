"""Driving videos through the real slot path, judged on the encoded output (issue P9's figures).

For each video: a slot is planned with `motion.driving` (pose mode by default), warped (mesh warp
by default), verified, encoded and published; the published MP4 is decoded and tracked with
MediaPipe and compared with the driving video (stages.verify.motion_transfer), and the mouth is
checked against the speech with the lip-sync judge.

    .venv/bin/python benchmarks/bench_driving.py                      # every video in ../shared/driving, 45 s slots
    .venv/bin/python benchmarks/bench_driving.py --seconds 12 --mode full d12.mp4
    .venv/bin/python benchmarks/bench_driving.py --seconds 4 --liveportrait /path/to/LivePortrait d14.mp4
    .venv/bin/python benchmarks/bench_driving.py --faces sample s5.jpg s12.jpg   # the sample and two shared faces

Yaw and pitch are read two ways, each as r and gain (the rendered motion's amplitude over the
clip's): the rigid fit of the skull's points, and the nose's 2-D parallax across the eye line;
and the parallax once more without MediaPipe on the slot's side ("flow yaw", "flow pitch": the
slot's first frame's nose and eye corners carried by optical flow, stages.verify.flow_parallax),
against the clip's MediaPipe parallax. MediaPipe reads small turns of a warped photo short (see
docs/driving.md); the flow columns read what the picture does. And the rigid fit once more
with the slot's frames tracked out of order ("shuf. yaw", "shuf. pitch": one tracker, a fixed
shuffled order): MediaPipe's tracking mode lags behind a warp turning by small steps. --no-flow
leaves these four out (they cost ~45 ms of CPU per frame).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from tests.support.slots import judge_driven_slot, liveportrait_settings  # noqa: E402
from vortexd import pipeline  # noqa: E402
from vortexd.settings import Settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "driving"
TEXT = ("Good evening from the director node. Tonight the weather looks bright across the valley, the roads "
        "are clear, and the markets closed a little higher. Maybe people like bubbles. Thank you for watching, "
        "and please stand by for the news at the top of the hour.")


def main() -> None:
    """Print one line of figures per driving video."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", help="file names in ../shared/driving (default: all)")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--mode", choices=("pose", "full"), default="pose")
    parser.add_argument("--faces", nargs="*", default=["sample"],
                        help="actors to drive: 'sample' (the built-in) and/or portraits in ../shared/faces")
    parser.add_argument("--no-flow", action="store_true", help="leave out the optical-flow columns")
    parser.add_argument("--liveportrait", metavar="WEIGHTS",
                        help="warp with LivePortrait instead of the mesh: the official release's folder, or "
                             "tiny / full for random weights (the path's mechanics: no face to judge)")
    args = parser.parse_args()
    videos = [SHARED / name for name in args.videos] or sorted(SHARED.glob("*.mp4"))
    with tempfile.TemporaryDirectory() as folder:
        extra = liveportrait_settings(Path(folder), args.liveportrait) if args.liveportrait else {}
        backends = pipeline.Backends(Settings(output_dir=Path(folder), **extra))
        print(f"{args.seconds:.0f} s slots, {args.mode} mode, {backends.settings.warp_backend} warp; "
              "judged on the decoded MP4")
        print(f"{'face':<7} {'video':<8} {'yaw r/gain':>11} {'pitch r/gain':>12} {'par. yaw':>11} {'par. pitch':>11} "
              f"{'blinks d/r':>10} {'±1 frame':>8} {'extra':>5} {'join°':>6} {'clip max°':>9} {'jitter r/d':>13} "
              f"{'lip lag':>7} {'render s':>8} {'flow yaw':>11} {'flow pitch':>11}  "
              f"{'shuf. yaw':>11} {'shuf. pitch':>11}")
        for face in [None if name == "sample" else SHARED.parent / "faces" / name for name in args.faces]:
            for video in videos:
                row = judge_driven_slot(video, TEXT, args.seconds, args.mode, Path(folder), backends, face)
                flow = "" if args.no_flow or row["report"] is None else _flow_text(video, face, Path(folder))
                print(f"{face.stem if face else 'sample':<7} {_row_text(row)} {flow}")
        backends.close()


def _row_text(row: dict) -> str:
    """One table row for a judged slot (or why it was not judged)."""
    r = row["report"]
    if r is None:
        found, total = row["face_frames"]
        return (f"{row['video']:<8} not judged: the face was tracked in {found} of {total} rendered frames "
                f"(render {row['render_s']:.1f} s)")
    blinks = f"{len(r.driving_blinks):>4}/{len(r.rendered_blinks):<5}"
    pair = lambda c, g: f"{c:5.2f}/{g:4.2f}"  # noqa: E731
    return (f"{row['video']:<8} {pair(r.yaw_r, r.yaw_gain):>11} {pair(r.pitch_r, r.pitch_gain):>12} "
            f"{pair(r.parallax_yaw_r, r.parallax_yaw_gain):>11} {pair(r.parallax_pitch_r, r.parallax_pitch_gain):>11} "
            f"{blinks} {r.blinks_within_one_frame:>8} {r.extra_blinks:>5} {r.join_step_deg:6.2f} "
            f"{r.clip_max_step_deg:9.2f} {r.rendered_jitter:6.4f}/{r.driving_jitter:6.4f} "
            f"{row['lag_frames']!s:>7} {row['render_s']:8.1f}")


def _flow_text(video: Path, face: Path | None, folder: Path) -> str:
    """The flow columns of a judged slot: its published MP4 decoded again and read by optical flow
    (judge_driven_slot, in tests/support, does not hand back its frames)."""
    from stages.encode.decode import decode_mp4
    from stages.image.face import track_landmarks
    from stages.motion.driving import fit_to_slot, track_video
    from stages.verify.motion_transfer import flow_transfer, measure_transfer, track_out_of_order

    decoded = decode_mp4(folder / f"driven-{video.stem}-{face.stem if face else 'sample'}" / "video.mp4")
    rest = track_landmarks(decoded.frames[:1])[0]
    motion = pipeline.load_driving_motion(video)
    fitted = fit_to_slot(motion, len(decoded.frames), decoded.fps)
    tracked = track_video(video)
    yaw_r, yaw_gain, pitch_r, pitch_gain = flow_transfer(tracked.landmarks, motion.reference_frame,
                                                         fitted.positions, decoded.frames, rest)
    text = f"{yaw_r:5.2f}/{yaw_gain:4.2f} {pitch_r:5.2f}/{pitch_gain:4.2f}"
    shuffled = track_out_of_order(decoded.frames)
    found = np.isfinite(shuffled[:, 0, 0])
    if found.mean() < 0.98:
        return text + f"  (shuffled tracking found the face in {found.sum()} of {len(found)} frames)"
    # A few frames lost (a crop carried from a very different frame): filled in from their neighbours.
    t = np.arange(len(shuffled))
    flat = shuffled.reshape(len(t), -1)
    shuffled = np.stack([np.interp(t, t[found], column[found]) for column in flat.T], axis=1).reshape(shuffled.shape)
    r = measure_transfer(tracked.landmarks, tracked.fps, motion.reference_frame, shuffled, decoded.fps,
                         fitted.positions, fitted.joins)
    return text + f"  {r.yaw_r:5.2f}/{r.yaw_gain:4.2f} {r.pitch_r:5.2f}/{r.pitch_gain:4.2f}"


if __name__ == "__main__":
    main()
