"""Small real HLS slot folders for channel tests, made with FFmpeg's hls muxer through PyAV.

Each slot is `seconds` of 64×64 H.264 video of one flat grey level and an AAC sine tone, cut into
fMP4 segments of 2 s (a keyframe every 48 frames at 24 fps), exactly the shape a published slot's
`hls/` folder has: `index.m3u8` (EXT-X-MAP init.mp4, seg_NNNNN.m4s, EXT-X-ENDLIST).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FPS = 24
SAMPLE_RATE = 24_000
SIZE = 64


def make_hls_slot(folder: Path, *, level: int, tone_hz: float, seconds: int = 5) -> Path:
    """Write an fMP4 HLS VOD of `seconds` into `folder` (created) and return `folder`.

    Every frame is grey `level` (0–255) so a decoded frame tells which slot it came from; the
    audio is a `tone_hz` sine so a decoded audio stretch does too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    container = av.open(str(folder / "index.m3u8"), "w", format="hls", options={
        "hls_segment_type": "fmp4", "hls_time": "2", "hls_playlist_type": "vod",
        "hls_fmp4_init_filename": "init.mp4", "hls_segment_filename": str(folder / "seg_%05d.m4s")})
    video = container.add_stream("libx264", rate=FPS)
    video.width = video.height = SIZE
    video.pix_fmt = "yuv420p"
    # A keyframe exactly every 2 s, so the muxer cuts 2 s segments that each start on one.
    video.options = {"g": str(2 * FPS), "keyint_min": str(2 * FPS), "sc_threshold": "0"}
    audio = container.add_stream("aac", rate=SAMPLE_RATE)
    audio.layout = "mono"
    for index in range(FPS * seconds):
        frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), level, np.uint8), format="rgb24")
        frame.pts, frame.time_base = index, Fraction(1, FPS)
        for packet in video.encode(frame):
            container.mux(packet)
    times = np.arange(SAMPLE_RATE * seconds) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * tone_hz * times)).astype(np.float32)
    for start in range(0, samples.size, 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
        for packet in audio.encode(frame):
            container.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode():
            container.mux(packet)
    container.close()
    return folder


def dominant_hz(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """The frequency with the most energy in `samples` (mono float)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate)[int(np.argmax(spectrum))])
