"""Streaming encode (StreamEncoder → HLS fMP4 segments, then remux_mp4) against encode_mp4 on the same frames.

Run from the repo root:  .venv/bin/python benchmarks/bench_stream.py [--frames 1080] [--chunk 48] [--repeats 2]

The frames are bench_encode.py's moving portrait (512², 24 fps, a 45 s slot); the audio is
speech-like noise bursts at 24 kHz. Frames are fed in `--chunk`-frame chunks as fast as the
encoder takes them, so first_segment_s is the encoder's own share of the first-segment latency
(the pipeline adds the warp time of the first two chunks). Prints, per run: first_segment_s,
stream encode s, frames/s, remux s, and encode_mp4's s and frames/s; then the best of each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_encode import FPS, SAMPLE_RATE_HZ, talking_frames  # noqa: E402

from stages.encode import encode_mp4  # noqa: E402
from stages.encode.stream import ENCODER_THREADS, StreamEncoder, remux_mp4  # noqa: E402


def speech_like_audio(n_samples: int, seed: int = 0) -> np.ndarray:
    """Noise shaped into syllable-length bursts (~4 per second), like speech to an AAC encoder."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(n_samples) / SAMPLE_RATE_HZ
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t_s), 0, None) ** 2
    return (0.2 * envelope * rng.standard_normal(n_samples)).astype(np.float32)


def run_stream(frames: np.ndarray, audio: np.ndarray, folder: Path, chunk: int) -> dict[str, float]:
    """One streamed encode plus its remux; the figures."""
    encoder = StreamEncoder(folder / "hls", FPS, len(frames), audio, SAMPLE_RATE_HZ)
    for start in range(0, len(frames), chunk):
        encoder.add_frames(frames[start : start + chunk], start)
    result = encoder.close()
    remux = remux_mp4(folder / "hls", folder / "video.mp4")
    return {
        "first_segment_s": result.first_segment_s,
        "stream_s": result.encode_s,
        "stream_fps": result.frames_per_s,
        "segments": len(result.segments),
        "hls_mb": sum(s.bytes for s in result.segments) / 1e6,
        "remux_s": remux.remux_s,
        "mp4_mb": remux.file_bytes / 1e6,
    }


def run_mp4(frames: np.ndarray, audio: np.ndarray, folder: Path) -> dict[str, float]:
    """encode_mp4 on the same frames; the figures."""
    stats = encode_mp4(frames, audio, folder / "whole.mp4", fps=FPS, sample_rate_hz=SAMPLE_RATE_HZ)
    return {"mp4_s": stats.encode_s, "mp4_fps": stats.frames_per_s, "whole_mb": stats.file_bytes / 1e6}


def main() -> None:
    """Parse arguments, run the repeats, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=45 * FPS)
    parser.add_argument("--chunk", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    frames = talking_frames(args.frames)
    audio = speech_like_audio(args.frames * SAMPLE_RATE_HZ // FPS)
    print(f"{args.frames} frames {frames.shape[2]}x{frames.shape[1]} @ {FPS} fps, chunks of {args.chunk}, "
          f"x264 threads {ENCODER_THREADS}")
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            stream = run_stream(frames, audio, Path(tmp), args.chunk)
            whole = run_mp4(frames, audio, Path(tmp))
        rows.append({**stream, **whole})
        print(f"run {repeat}: first segment {stream['first_segment_s']:.3f} s | stream {stream['stream_s']:.2f} s "
              f"({stream['stream_fps']:.0f} frames/s, {stream['segments']} segments, {stream['hls_mb']:.1f} MB) | "
              f"remux {stream['remux_s']:.3f} s ({stream['mp4_mb']:.1f} MB) | encode_mp4 {whole['mp4_s']:.2f} s "
              f"({whole['mp4_fps']:.0f} frames/s, {whole['whole_mb']:.1f} MB)")
    best = {key: (max if key.endswith("fps") else min)(row[key] for row in rows) for key in rows[0]}
    print(f"best: first_segment_s {best['first_segment_s']:.3f} | stream+remux {best['stream_s'] + best['remux_s']:.2f} s "
          f"({best['stream_fps']:.0f} frames/s) | encode_mp4 {best['mp4_s']:.2f} s ({best['mp4_fps']:.0f} frames/s)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"bench wall {time.perf_counter() - started:.1f} s")
