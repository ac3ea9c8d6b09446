"""How wide the mouth opens and what shows inside it: renders of every shared face against the
shared driving clips' real mouths (issue P12), all measured the same way with MediaPipe.

    .venv/bin/python benchmarks/bench_mouth.py                    # every face + the sample actor, every clip
    .venv/bin/python benchmarks/bench_mouth.py --seconds 8 --faces s5.jpg --clips d9.mp4 --save-dir /tmp/m

Per video, on its speech frames (the frame's loudness within 30 dB of the loudest frame):
- gap: inner-lip gap over mouth width (landmarks 13–14 over 61–291), p50 / p90 / max;
- on frames whose gap is ≥ 0.12 (the mouth clearly open): the median luma of the inner-lip
  polygon over that of the lips around it (lower = a darker inside), the share of the interior
  darker than half the lips' luma ("dark"), and the share brighter than the lips by 25 % and
  low in chroma ("teeth": white-ish pixels, tooth enamel or a highlight);
- lag: the best lag of the mouth against the loudness (+ = the video late), our judge's reading.
With --save-dir, the widest-open speech frame of each video is written as a PNG (mouth crop ×3).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from stages.verify.lipsync import best_lag, envelope_reference  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEXT = ("Good evening from the director node. Tonight the weather looks bright across the valley, the roads "
        "are clear, and the markets closed a little higher. Maybe people like bubbles. Thank you for watching, "
        "and please stand by for the news at the top of the hour.")
LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
OPEN_GAP = 0.12
SPEECH_DB = 30.0
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class MouthFigures:
    """One video's mouth figures (see the module docstring)."""

    name: str
    speech_frames: int
    gap_p50: float
    gap_p90: float
    gap_max: float
    open_frames: int
    inner_over_lips: float
    dark_share: float
    teeth_share: float
    lag_frames: int | None
    lag_r: float | None


def gap_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap over mouth width (13–14 over 61–291); NaN where no face was tracked."""
    p = landmarks[..., :2].astype(np.float64)
    gap = np.linalg.norm(p[:, 13] - p[:, 14], axis=-1)
    width = np.linalg.norm(p[:, 61] - p[:, 291], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(width > 0, gap / width, np.nan)


def interior_stats(frame: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float]:
    """(inner luma / lip luma, dark share, teeth share) of one frame's inner-lip polygon."""
    h, w = frame.shape[:2]
    inner = np.zeros((h, w), np.uint8)
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inner, [np.round(landmarks[list(LIP_INNER), :2]).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(landmarks[list(LIP_OUTER), :2]).astype(np.int32)], 1)
    lips &= 1 - cv2.dilate(inner, np.ones((3, 3), np.uint8))
    inner = cv2.erode(inner, np.ones((3, 3), np.uint8))  # keep clear of the lip edge itself
    if inner.sum() < 6 or lips.sum() < 6:
        return np.nan, np.nan, np.nan
    rgb = frame.astype(np.float64)
    luma = rgb @ _LUMA
    lip_luma = float(np.median(luma[lips.astype(bool)]))
    inside = inner.astype(bool)
    chroma = rgb.max(-1) - rgb.min(-1)
    teeth = (luma[inside] > 1.25 * lip_luma) & (chroma[inside] < 0.35 * luma[inside])
    return (float(np.median(luma[inside])) / max(lip_luma, 1.0), float(np.mean(luma[inside] < 0.5 * lip_luma)),
            float(np.mean(teeth)))


def figures(name: str, frames: np.ndarray, landmarks: np.ndarray, audio: np.ndarray, rate_hz: int,
            fps: float, save_dir: Path | None) -> MouthFigures:
    """Measure one video: its frames, their landmarks, its audio (sample 0 at frame 0)."""
    gap = gap_ratio(landmarks)
    envelope = envelope_reference(audio, rate_hz, fps, len(frames))
    speech = (envelope > 50.0 - SPEECH_DB) & np.isfinite(gap)
    g = gap[speech]
    open_ids = np.flatnonzero(speech & (gap >= OPEN_GAP))
    stats = np.array([interior_stats(frames[i], landmarks[i]) for i in open_ids]).reshape(-1, 3)
    eye = np.linalg.norm(landmarks[:, 33, :2] - landmarks[:, 263, :2], axis=-1)
    aperture = np.linalg.norm(landmarks[:, 13, :2] - landmarks[:, 14, :2], axis=-1) / eye
    try:
        lag = best_lag(aperture, envelope, 8)
        lag_frames, lag_r = lag.lag_frames, lag.correlation
    except Exception:  # noqa: BLE001 - a video without a judgeable mouth: say so in the table
        lag_frames, lag_r = None, None
    if save_dir is not None and len(g):
        _save_widest(save_dir / f"{name}.png", frames, landmarks, np.where(speech, gap, -1.0))
    return MouthFigures(name, int(speech.sum()), *(np.percentile(g, [50, 90, 100]) if len(g) else (np.nan,) * 3),
                        len(open_ids), *(np.nanmedian(stats, axis=0) if len(stats) else (np.nan,) * 3),
                        lag_frames, lag_r)


def _save_widest(path: Path, frames: np.ndarray, landmarks: np.ndarray, gap: np.ndarray) -> None:
    """The widest-open frame's mouth, 3× enlarged, next to the frame's p75-open one."""
    order = np.argsort(gap)
    crops = []
    for i in (order[-1], order[int(0.75 * (len(order) - 1))]):
        cx, cy = landmarks[i, [61, 291], 0].mean(), landmarks[i, [13, 14], 1].mean()
        half = max(24, int(0.8 * np.linalg.norm(landmarks[i, 61, :2] - landmarks[i, 291, :2])))
        y0, x0 = int(np.clip(cy - half, 0, frames.shape[1] - 2 * half)), int(np.clip(cx - half, 0, frames.shape[2] - 2 * half))
        crop = frames[i, y0:y0 + 2 * half, x0:x0 + 2 * half]
        crops.append(cv2.resize(crop, (240, 240), interpolation=cv2.INTER_CUBIC))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(crops, axis=1)[..., ::-1])


def render_face(face: Path | None, seconds: float, folder: Path, expression: str = "neutral"):
    """Render `face` (None: the sample actor) speaking TEXT; (frames, landmarks, audio, rate, fps)."""
    from stages.image.face import track_landmarks
    from tests.support.slots import render_frames

    recipe = {"slot_id": "mouth", "speech": {"text": TEXT}, "motion": {"expression": expression, "seed": 7},
              "output": {"duration_s": seconds, "fps": 24}}
    if face is not None:  # a recipe's files live in its own folder
        (folder / face.name).write_bytes(face.read_bytes())
        recipe["actor"] = {"image": face.name}
    rendered = render_frames(recipe, folder)
    frames = np.ascontiguousarray(rendered.frames[: rendered.recipe.output.n_frames])
    return frames, track_landmarks(frames), rendered.speech.audio, rendered.speech.sample_rate_hz, 24.0


def read_clip(path: Path, seconds: float):
    """A driving clip's frames, landmarks and mono audio; (frames, landmarks, audio, rate, fps)."""
    import av

    from stages.image.face import track_landmarks

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)][: int(seconds * fps)]
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=24_000)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
    frames = np.stack(frames)
    return frames, track_landmarks(frames), np.concatenate(chunks), 24_000, fps


def _row(f: MouthFigures) -> str:
    lag = "—" if f.lag_frames is None else f"{f.lag_frames:+d} ({f.lag_r:.2f})"
    return (f"{f.name:<14} {f.speech_frames:>6} {f.gap_p50:6.3f} {f.gap_p90:6.3f} {f.gap_max:6.3f} {f.open_frames:>5} "
            f"{f.inner_over_lips:8.2f} {f.dark_share:6.2f} {f.teeth_share:6.2f} {lag:>11}")


def main() -> None:
    """Print one row per face render and per driving clip."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--faces", nargs="*", help="file names in ../shared/faces (default: all, plus the sample)")
    parser.add_argument("--clips", nargs="*", help="file names in ../shared/driving (default: all)")
    parser.add_argument("--expression", default="neutral")
    parser.add_argument("--save-dir", type=Path)
    args = parser.parse_args()
    faces = ([SHARED / "faces" / n for n in args.faces] if args.faces is not None
             else [None] + sorted((SHARED / "faces").glob("*.jpg")))
    clips = [SHARED / "driving" / n for n in args.clips] if args.clips is not None else sorted((SHARED / "driving").glob("*.mp4"))
    print(f"{'video':<14} {'speech':>6} {'p50':>6} {'p90':>6} {'max':>6} {'open':>5} {'in/lips':>8} {'dark':>6} "
          f"{'teeth':>6} {'lag (r)':>11}")
    with tempfile.TemporaryDirectory() as folder:
        for face in faces:
            name = "sample" if face is None else face.stem
            try:
                video = render_face(face, args.seconds, Path(folder), args.expression)
            except Exception as exc:  # noqa: BLE001 - a refused portrait is a row of the table
                print(f"{name:<14} refused: {getattr(exc, 'message', exc)}")
                continue
            print(_row(figures(f"render-{name}", *video, args.save_dir)), flush=True)
    for clip in clips:
        print(_row(figures(f"clip-{clip.stem}", *read_clip(clip, args.seconds), args.save_dir)), flush=True)


if __name__ == "__main__":
    main()
