"""When the mouth moves against the sound: real speakers and our renders, measured the same way.

    .venv/bin/python benchmarks/bench_lip_timing.py                       # d11, d12, every face + sample
    .venv/bin/python benchmarks/bench_lip_timing.py --faces s5.jpg --seconds 10 --cache /tmp/lt

Two judges, each on two clocks (frame i shown from its presentation time i/fps, or read at its
centre (i + ½)/fps; the centre clock reads every event half a frame later):

- events (stages/verify/lipsync.event_offsets): a sound onset is the moment the loudness
  (300–4000 Hz, 20 ms RMS windows every 5 ms, in dB) has made half its rise out of a dip of
  ≥ 12 dB into speech — speech after a pause, or the burst after a stop closure (p/b/m among
  them). The mouth's event for it is the moment the lip gap (MediaPipe 13–14 over 61–291)
  around it leaves its closure: 20 % of its rise from the closure to the next opening, between
  frames by linear interpolation ("open"); "half" is 50 %. Δ = mouth event − sound onset in ms
  (negative: the mouth moves first). Per video: the event count, median Δ and a 95 % bootstrap
  interval of the median; "pause" rows keep only onsets after ≥ 150 ms near the noise floor.
- envelope: stages/verify/lipsync's best lag of the mouth against the loudness per frame (+ = the
  video late), as it reads (frame centres) and with the audio delayed half a frame (what a
  judge on presentation time reads).

The real speakers' clips are read after their container's edit lists (PyAV applies them); the
alignment table prints each track's edit list and first timestamps so an offset in the file is
not mistaken for a speaker's lead. Renders go through the real slot path (bench_mouth's
render_face: espeak speech, the planner, the mesh warp).
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from bench_mouth import SHARED, gap_ratio, render_face  # noqa: E402

from stages.verify.lipsync import EventOffsets, best_lag, envelope_reference, event_offsets  # noqa: E402

SPEAKERS = ("d11.mp4", "d12.mp4")
"""The shared clips of people speaking with their own audio (d3, d9, d14 carry music or noise)."""


@dataclass(frozen=True)
class Video:
    """Tracked landmarks of a video and its audio, sample 0 at the presentation time of frame 0."""

    name: str
    landmarks: np.ndarray
    audio: np.ndarray
    rate_hz: int
    fps: float


# --- the file itself: edit lists and first timestamps ---------------------------------------

def _boxes(data: bytes, off: int, end: int):
    while off + 8 <= end:
        size, kind = struct.unpack(">I4s", data[off:off + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[off + 8:off + 16])[0], 16
        size = size or end - off
        yield kind.decode("latin1"), off + header, off + size
        off += size


def edit_lists(path: Path) -> list[tuple[int, list[tuple[int, int]]]]:
    """Per track, in file order: (media timescale, [(segment duration, media_time)]) from its elst."""
    data = path.read_bytes()
    tracks: list[tuple[int, list[tuple[int, int]]]] = []

    def walk(off: int, end: int, track: dict) -> None:
        for kind, a, b in _boxes(data, off, end):
            if kind == "trak":
                found: dict = {"scale": 0, "edits": []}
                walk(a, b, found)
                tracks.append((found["scale"], found["edits"]))
            elif kind in ("moov", "edts", "mdia"):
                walk(a, b, track)
            elif kind == "elst":
                version, count = data[a], struct.unpack(">I", data[a + 4:a + 8])[0]
                fmt = ">Qq" if version else ">Ii"
                size = struct.calcsize(fmt) + 4
                track["edits"] = [struct.unpack(fmt, data[a + 8 + i * size:a + 8 + i * size + size - 4])
                                  for i in range(count)]
            elif kind == "mdhd":
                track["scale"] = struct.unpack(">I", data[a + (20 if data[a] else 12):a + (24 if data[a] else 16)])[0]

    walk(0, len(data), {})
    return tracks


def alignment_row(path: Path) -> str:
    """The clip's edit lists and the first decoded timestamp of each stream (ms)."""
    import av

    parts = []
    for scale, edits in edit_lists(path):
        parts.append("elst " + ", ".join(f"skip {1000.0 * media / scale:.1f} ms" for _, media in edits))
    with av.open(str(path)) as container:
        firsts = {}
        for kind in ("video", "audio"):
            frame = next(container.decode(**{kind: 0}))
            firsts[kind] = frame.time
            container.seek(0)
    offset_ms = 1000.0 * (firsts["audio"] - firsts["video"])
    return (f"{path.stem:<6} {'; '.join(parts):<40} first video {1000 * firsts['video']:.1f} ms, "
            f"first audio {1000 * firsts['audio']:.1f} ms: audio − video {offset_ms:+.1f} ms")


def read_speaker(path: Path) -> Video:
    """A clip's tracked frames and its mono audio at the native rate (no resampler delay), the
    audio shifted so that sample 0 plays with frame 0."""
    import av

    from stages.image.face import track_landmarks

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        decoded = list(container.decode(stream))
        video_t0 = decoded[0].time
        frames = np.stack([f.to_ndarray(format="rgb24") for f in decoded])
    with av.open(str(path)) as container:
        chunks = list(container.decode(audio=0))
        rate = chunks[0].sample_rate
        audio_t0 = chunks[0].time
        audio = np.concatenate([c.to_ndarray().reshape(len(c.layout.channels), -1).mean(0)
                                if c.format.is_planar else c.to_ndarray().reshape(-1, len(c.layout.channels)).mean(1)
                                for c in chunks]).astype(np.float64)
    lead = int(round((audio_t0 - video_t0) * rate))  # > 0: the audio starts after frame 0
    audio = np.concatenate([np.zeros(lead), audio]) if lead >= 0 else audio[-lead:]
    return Video(path.stem, track_landmarks(frames), audio, rate, fps)


def render_video(face: Path | None, seconds: float, folder: Path) -> Video:
    """A face rendered speaking through the slot path, tracked."""
    _, landmarks, audio, rate, fps = render_face(face, seconds, folder)
    return Video("sample" if face is None else face.stem, landmarks, np.asarray(audio, np.float64), rate, fps)


# --- the judges -----------------------------------------------------------------------------

def median_ci(values: np.ndarray, seed: int = 0, draws: int = 4000) -> tuple[float, float, float]:
    """Median and its 95 % bootstrap interval (NaN when empty)."""
    if len(values) == 0:
        return (np.nan,) * 3
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, (draws, len(values))), axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(np.median(values)), float(lo), float(hi)


def event_timing(video: Video) -> EventOffsets:
    """The event judge on one video: its lip gap (13–14 over 61–291) against its audio."""
    return event_offsets(gap_ratio(video.landmarks), video.fps, video.audio, video.rate_hz)


def envelope_lags(video: Video) -> tuple[float, float, float]:
    """(frame-centre lag, presentation-time lag, r at presentation) of the envelope judge, frames."""
    p = video.landmarks[..., :2].astype(np.float64)
    aperture = np.linalg.norm(p[:, 13] - p[:, 14], axis=-1) / np.linalg.norm(p[:, 33] - p[:, 263], axis=-1)
    n = len(aperture)
    centre = best_lag(aperture, envelope_reference(video.audio, video.rate_hz, video.fps, n), 8)
    # A judge on presentation time hears frame i's sound from i/fps: the same loudness read half a
    # frame later, i.e. the audio delayed by half a frame against the frame centres.
    delay = np.zeros(int(round(0.5 * video.rate_hz / video.fps)))
    shown = best_lag(aperture, envelope_reference(np.concatenate([delay, video.audio]), video.rate_hz,
                                                  video.fps, n), 8)
    return centre.lag_refined_frames, shown.lag_refined_frames, shown.correlation


# --- the table -------------------------------------------------------------------------------

def _ci(values: np.ndarray, shift_ms: float = 0.0) -> str:
    m, lo, hi = median_ci(values + shift_ms)
    return "—" if not np.isfinite(m) else f"{m:+5.0f} [{lo:+4.0f},{hi:+4.0f}]"


def _row(name: str, timing: EventOffsets, fps: float, envelope: tuple[float, float, float] | None) -> str:
    half_frame_ms = 500.0 / fps
    env = "" if envelope is None else f"{envelope[0]:+6.2f} {envelope[1]:+6.2f} ({envelope[2]:.2f})"
    return (f"{name:<10} {timing.onsets:>4} {len(timing.open_ms):>4} {_ci(timing.open_ms):>19} "
            f"{_ci(timing.open_ms, half_frame_ms):>19} {_ci(timing.half_ms):>19} "
            f"{int(timing.after_pause.sum()):>3} {_ci(timing.open_ms[timing.after_pause]):>19} {env}")


def _pooled(timings: list[EventOffsets]) -> EventOffsets:
    fields = ("open_ms", "half_ms", "after_pause")
    return EventOffsets(*(np.concatenate([getattr(t, f) for t in timings]) for f in fields),
                       sum(t.onsets for t in timings))


def _load(cache: Path | None, key: str, make) -> Video:
    """A video from the cache folder when there, else made (and cached when a folder is given)."""
    path = None if cache is None else cache / f"{key}.npz"
    if path is not None and path.exists():
        d = np.load(path)
        return Video(str(d["name"]), d["landmarks"], d["audio"], int(d["rate_hz"]), float(d["fps"]))
    video = make()
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, name=video.name, landmarks=video.landmarks, audio=video.audio, rate_hz=video.rate_hz,
                 fps=video.fps)
    return video


def main() -> None:
    """Print the alignment of the speakers' files, then one row per video and the pooled rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="render length")
    parser.add_argument("--faces", nargs="*", help="file names in ../shared/faces (default: all, plus the sample)")
    parser.add_argument("--clips", nargs="*", default=list(SPEAKERS))
    parser.add_argument("--cache", type=Path, help="keep tracked videos here (renders keyed by face and length)")
    args = parser.parse_args()
    faces = ([SHARED / "faces" / n for n in args.faces] if args.faces is not None
             else [None] + sorted((SHARED / "faces").glob("*.jpg")))
    clips = [SHARED / "driving" / n for n in args.clips]
    for clip in clips:
        print(alignment_row(clip))
    print("\nΔ = mouth − sound, ms (− = mouth first), median [95 % CI]; "
          "envelope lags in frames (+ = video late)\n"
          f"{'video':<10} {'ons':>4} {'ev':>4} {'open, shown i/fps':>19} {'open, centre':>19} {'half, shown':>19} "
          f"{'n':>3} {'open after pause':>19} {'env centre / shown (r)'}")
    groups: dict[str, list[EventOffsets]] = {"real": [], "render": []}
    with tempfile.TemporaryDirectory() as folder:
        videos = [("real", _load(args.cache, f"clip-{c.stem}", lambda c=c: read_speaker(c))) for c in clips]
        for face in faces:
            key = f"render-{'sample' if face is None else face.stem}-{args.seconds:g}s"
            try:
                videos.append(("render", _load(args.cache, key, lambda f=face: render_video(f, args.seconds,
                                                                                            Path(folder)))))
            except Exception as exc:  # noqa: BLE001 - a refused portrait is a row of the table
                print(f"{face.stem:<10} refused: {getattr(exc, 'message', exc)}")
        for group, video in videos:
            timing = event_timing(video)
            groups[group].append(timing)
            print(_row(video.name, timing, video.fps, envelope_lags(video)), flush=True)
    fps = {"real": 25.0, "render": 24.0}
    for group, timings in groups.items():
        if timings:
            print(_row(f"all {group}", _pooled(timings), fps[group], None))


if __name__ == "__main__":
    main()
