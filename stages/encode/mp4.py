"""H.264 + AAC MP4 writing with PyAV: exact frame count, exact duration, audio aligned to video.

Alignment: FFmpeg's AAC encoder emits 1024 "priming" samples before the first real one. The
MP4 muxer records them in the audio track's edit list (media_time = 1024), so every decoder
that honours edit lists (FFmpeg, browsers, QuickTime) drops them and audio sample 0 plays at
video time 0. The decode-side test of that is a click placed at t = 10 s.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import StageInputError

DEFAULT_CRF = 20
"""x264 constant-rate factor: visually clean for talking heads at ~1–2 Mbit/s at 512²."""

DEFAULT_PRESET = "ultrafast"
"""x264 preset, chosen by measurement (benchmarks/bench_encode.py, 1080 frames of a moving
portrait, 2 cores, CRF 20): ultrafast 1.8 s whole encode (~600 frames/s, 15 MB, PSNR 41.2 dB),
superfast 3.1 s, veryfast 4.1 s (6 MB, 40.9 dB). Only ultrafast stays well under the 3 s budget; pass
preset="veryfast" where file size matters more than encode time."""

AUDIO_BITRATE_BPS = 96_000
"""AAC-LC bitrate for 24 kHz mono speech (transparent for speech, small)."""

AAC_FRAME_SAMPLES = 1024
"""Samples per AAC-LC frame; audio is fed to the encoder in blocks of this size."""

GOP_S = 2.0
"""Keyframe interval in seconds: seekable in 2 s steps, still cheap in bits."""


@dataclass(frozen=True)
class EncodeStats:
    """What `encode_mp4` wrote and how long it took."""

    path: Path
    n_frames: int
    fps: int
    duration_s: float
    audio_samples: int  # after padding/trimming to the video duration
    audio_padded_samples: int  # silence appended because the speech was shorter than the video
    audio_trimmed_samples: int  # samples dropped because the speech was longer than the video
    file_bytes: int
    encode_s: float
    crf: int
    preset: str

    @property
    def frames_per_s(self) -> float:
        """Encode throughput in video frames per wall-clock second."""
        return self.n_frames / self.encode_s if self.encode_s > 0 else float("inf")


def check_frames(frames: np.ndarray) -> None:
    """Refuse anything but a non-empty (T, H, W, 3) uint8 RGB array with even H and W."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise StageInputError("frames", "expected a (T, H, W, 3) uint8 RGB array", shape=shape, dtype=str(dtype))
    n_frames, height, width = frames.shape[:3]
    if n_frames == 0:
        raise StageInputError("frames", "no frames to encode")
    # yuv420p halves the chroma resolution, so both sides must be even.
    if height % 2 or width % 2:
        raise StageInputError("frames", "width and height must be even for yuv420p", width=width, height=height)


def fit_audio(audio: np.ndarray, n_samples: int) -> tuple[np.ndarray, int, int]:
    """`audio` as float32 of exactly `n_samples` (silence appended or tail dropped), clipped to ±1."""
    samples = np.asarray(audio)
    if samples.ndim != 1 or samples.dtype.kind != "f":
        raise StageInputError("speech.audio", "expected a 1-D float array (mono)",
                              shape=samples.shape, dtype=str(samples.dtype))
    if not np.all(np.isfinite(samples)):
        raise StageInputError("speech.audio", "audio contains NaN or infinite samples")
    kept = samples[:n_samples]
    fitted = np.zeros(n_samples, dtype=np.float32)
    # Clip rather than let the AAC encoder wrap or the decoder saturate unpredictably.
    np.clip(kept, -1.0, 1.0, out=fitted[: len(kept)], casting="same_kind")
    padded = n_samples - len(kept)
    trimmed = len(samples) - len(kept)
    return fitted, padded, trimmed


def rgb_to_i420(frame: np.ndarray):
    """One RGB frame as an av.VideoFrame in yuv420p (BT.601, limited range)."""
    import av
    import cv2

    # OpenCV's I420 conversion is BT.601 limited range with 2×2-averaged chroma, ~4× faster than
    # swscale's default path from rgb24; the stream is tagged BT.601 so decoders invert it exactly.
    yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
    # Wrapped, not copied (from_ndarray copied each plane again in Python, ~0.1 s per slot): the
    # array is fresh for every frame and the frame keeps it alive until the encoder is done with it.
    return av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")


def add_h264_stream(container, fps: int, width: int, height: int, crf: int, preset: str,
                    gop_frames: int, extra_options: dict[str, str] | None = None):
    """Add the slot's x264 video stream (yuv420p, BT.601 limited range tags) to `container`.

    `gop_frames` is the keyframe interval; `extra_options` are further libx264 options.
    """
    video = container.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.options = {"crf": str(crf), "preset": preset, "g": str(max(1, int(gop_frames))), **(extra_options or {})}
    ctx = video.codec_context
    # BT.601 / SMPTE 170M, limited range: what rgb_to_i420 produced, written into the H.264 VUI.
    ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 6, 6, 6, 1
    return video


def add_aac_stream(container, sample_rate_hz: int):
    """Add the slot's mono AAC-LC audio stream (AUDIO_BITRATE_BPS, fast coder) to `container`."""
    audio = container.add_stream("aac", rate=sample_rate_hz, layout="mono")
    audio.bit_rate = AUDIO_BITRATE_BPS
    # FFmpeg's default "twoloop" AAC coder spent ~1.0 s on 45 s of speech; "fast" takes ~0.13 s
    # and is transparent for speech at 96 kbit/s mono.
    audio.options = {"aac_coder": "fast"}
    return audio


def _open_output(path: Path, fps: int, width: int, height: int, sample_rate_hz: int, crf: int, preset: str):
    import av

    # +faststart moves the moov box in front of the media data: players can start before the
    # whole file has arrived.
    container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
    video = add_h264_stream(container, fps, width, height, crf, preset, int(round(GOP_S * fps)))
    return container, video, add_aac_stream(container, sample_rate_hz)


def _mux_interleaved(container, video, audio_stream, frames: np.ndarray, samples: np.ndarray, fps: int,
                     sample_rate_hz: int) -> None:
    """Encode every frame and audio block into the open `container`, interleaved, then flush both."""
    import av

    n_frames, n_samples = len(frames), len(samples)
    # Audio block k starts at sample k·1024; after video frame i we feed every block that starts
    # before that frame ends, so the muxer receives both streams in time order (a well
    # interleaved file that plays while it downloads) without buffering the whole video.
    block_starts = np.arange(0, n_samples, AAC_FRAME_SAMPLES)
    blocks_due = np.searchsorted(block_starts, (np.arange(1, n_frames + 1) * sample_rate_hz) / fps, side="left")
    next_block = 0
    for i in range(n_frames):
        picture = rgb_to_i420(frames[i])
        picture.pts = i
        container.mux(video.encode(picture))
        for start in block_starts[next_block : blocks_due[i]]:
            block = samples[start : start + AAC_FRAME_SAMPLES]
            sound = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            sound.sample_rate, sound.pts = sample_rate_hz, int(start)
            container.mux(audio_stream.encode(sound))
        next_block = max(next_block, int(blocks_due[i]))
    container.mux(video.encode(None))
    container.mux(audio_stream.encode(None))


def encode_mp4(
    frames: np.ndarray,
    audio: np.ndarray,
    path: Path | str,
    fps: int = 24,
    sample_rate_hz: int = 24_000,
    crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
) -> EncodeStats:
    """Write `frames` (T, H, W, 3) uint8 RGB and mono `audio` as an H.264 + AAC MP4 at `path`.

    The file has exactly T video frames and lasts T / fps seconds; the audio is padded with
    silence or trimmed to exactly that length and starts at video time 0 (the AAC priming delay
    is hidden by the MP4 edit list). Frames are converted one at a time, never copied as a whole.
    """
    check_frames(frames)
    if not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise StageInputError("output.fps", "fps must be a positive integer", fps=fps)
    if sample_rate_hz <= 0:
        raise StageInputError("speech.sample_rate_hz", "sample rate must be positive", sample_rate_hz=sample_rate_hz)
    n_frames, height, width = frames.shape[:3]
    n_samples = int(round(n_frames * sample_rate_hz / fps))
    samples, padded, trimmed = fit_audio(audio, n_samples)
    path = Path(path)

    started = time.perf_counter()
    container, video, audio_stream = _open_output(path, int(fps), width, height, sample_rate_hz, crf, preset)
    try:
        _mux_interleaved(container, video, audio_stream, frames, samples, fps, sample_rate_hz)
    except BaseException:
        # Never leave a truncated MP4 behind; closing a half-written container may itself fail.
        with contextlib.suppress(Exception):
            container.close()
        path.unlink(missing_ok=True)
        raise
    container.close()
    elapsed = time.perf_counter() - started
    return EncodeStats(
        path=path, n_frames=n_frames, fps=int(fps), duration_s=n_frames / fps, audio_samples=n_samples,
        audio_padded_samples=padded, audio_trimmed_samples=trimmed, file_bytes=path.stat().st_size,
        encode_s=elapsed, crf=crf, preset=preset,
    )
