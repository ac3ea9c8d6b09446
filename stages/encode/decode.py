"""Reading MP4s back: frames and audio on one timeline, and a probe of what a file contains.

`decode_mp4` puts audio sample 0 at video time 0 using the streams' own timestamps (after the
edit list has hidden the AAC priming), so a sound and the picture it belongs to line up to the
sample. `probe_mp4` also reads the MP4 boxes directly, to report what players see that PyAV
does not expose: whether the index is at the front (faststart) and the audio edit-list skip.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from stages.errors import StageInputError

# AVColorSpace values decoded as BT.601 (unspecified defaults to it for SD-sized video, as in
# swscale) and AVColorRange values meaning limited ("MPEG", 16–235) range.
_BT601_SPACES = {2, 5, 6}
_LIMITED_RANGES = {0, 1}
# Boxes that only contain other boxes, on the path moov → trak → edts/elst and mdia → hdlr.
_CONTAINER_BOXES = {b"moov", b"trak", b"edts", b"mdia"}


@dataclass(frozen=True)
class DecodedVideo:
    """An MP4 decoded: RGB frames and mono float32 audio, audio sample 0 at video time 0."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    audio: np.ndarray  # (n,) float32 mono
    sample_rate_hz: int
    fps: float
    duration_s: float  # of the returned frames: T / fps


def _open(path: Path | str):
    import av

    path = Path(path)
    if not path.is_file():
        raise StageInputError("path", "no such video file", path=str(path))
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise StageInputError("path", f"not a readable media file: {exc}", path=str(path)) from exc


def _seconds(value: int | None, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _mono_float(frame) -> np.ndarray:
    """The samples of one decoded audio frame as float32 mono (channels averaged)."""
    data = frame.to_ndarray()
    name = frame.format.name
    if not frame.format.is_planar:
        # Packed layouts interleave channels in one row: (1, n·ch) → (ch, n).
        data = data.reshape(-1, frame.layout.nb_channels).T
    if name.startswith("s16"):
        data = data.astype(np.float32) / 32768.0
    elif name.startswith("s32"):
        data = data.astype(np.float32) / 2147483648.0
    elif name.startswith("u8"):
        data = (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32, copy=False).mean(axis=0, dtype=np.float32)


def _to_rgb(frame, out: np.ndarray) -> None:
    """Write one decoded picture into `out` (H, W, 3) uint8 RGB, honouring its colour tags."""
    import cv2

    if frame.format.name == "yuv420p" and frame.colorspace in _BT601_SPACES and frame.color_range in _LIMITED_RANGES:
        # The common case (and what encode_mp4 writes): OpenCV's BT.601 limited-range inverse
        # writes straight into the output slab, ~2× faster than swscale plus a copy.
        cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420, dst=out)
    else:
        out[...] = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)


def decode_mp4(path: Path | str, max_frames: int | None = None, out: np.ndarray | None = None) -> DecodedVideo:
    """Decode `path` to RGB frames and mono audio where audio sample 0 plays at video time 0.

    `max_frames` keeps only the first frames (and the audio of the same span) to save memory;
    by default the whole file is returned, audio trimmed to the track's recorded duration.
    `out`, a (T, H, W, 3) uint8 array, receives the frames in place (T caps the frame count;
    the result's `frames` is a view of it): a reused buffer skips allocating ~0.8 GB per slot,
    which costs ~2 s of page faults on a fresh array here.
    """
    with _open(path) as container:
        if not container.streams.video:
            raise StageInputError("path", "the file has no video stream", path=str(path))
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        if fps <= 0:
            raise StageInputError("path", "the video stream has no frame rate", path=str(path))
        frames, max_frames = _frame_buffer(vstream, fps, max_frames, out)
        vstream.thread_type = "AUTO"  # frame-threaded H.264 decoding on both cores
        frames, video_t0_s, audio_parts, audio_t0_s = _decode_streams(container, vstream, astream, frames, max_frames)
        rate = int(astream.sample_rate) if astream is not None else 0
        audio = _align_audio(audio_parts, rate, audio_t0_s, video_t0_s)
        if astream is not None and astream.duration is not None and astream.start_time is not None:
            end_s = _seconds(astream.start_time + astream.duration, astream.time_base) - video_t0_s
            # Decoders return whole AAC frames; the container says where the real audio ends.
            audio = audio[: max(0, int(round(end_s * rate)))]
        if max_frames is not None:
            audio = audio[: int(round(len(frames) / fps * rate))]
    return DecodedVideo(frames=frames, audio=audio, sample_rate_hz=rate, fps=fps, duration_s=len(frames) / fps)


def _frame_buffer(vstream, fps: float, max_frames: int | None, out: np.ndarray | None):
    """The array decoded frames go into, and the effective frame cap."""
    height, width = vstream.codec_context.height, vstream.codec_context.width
    if out is not None:
        if out.dtype != np.uint8 or out.ndim != 4 or out.shape[1:] != (height, width, 3):
            raise StageInputError("out", f"expected a (T, {height}, {width}, 3) uint8 array",
                                  shape=out.shape, dtype=str(out.dtype))
        return out, len(out) if max_frames is None else min(max_frames, len(out))
    expected = vstream.frames or int(round(float((vstream.duration or 0) * vstream.time_base) * fps))
    if max_frames is not None:
        expected = min(expected, max_frames) if expected else max_frames
    # Preallocated so a 1080-frame file costs one (T, H, W, 3) array, not a list plus a copy.
    return _prefaulted_uint8((max(expected, 1), height, width, 3)), max_frames


def _prefaulted_uint8(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array whose pages the kernel maps up front.

    Touching 0.8 GB of fresh np.empty pages one fault at a time took ~2 s on the 2-core test
    machine; MAP_POPULATE maps them in one call (~0.4 s). Falls back to np.empty off Linux.
    """
    n_bytes = int(np.prod(shape))
    flags = getattr(mmap, "MAP_POPULATE", 0)
    if not flags or n_bytes == 0:
        return np.empty(shape, dtype=np.uint8)
    buffer = mmap.mmap(-1, n_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flags)
    # The array keeps the mmap alive; the mapping is released when the array is collected.
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def _decode_streams(container, vstream, astream, frames: np.ndarray, max_frames: int | None):
    """Decode video into `frames` (growing it if the container under-reported) and audio blocks.

    Returns (frames actually decoded, first video time, audio blocks, first audio time). With a
    frame cap, stops once both the video and the audio of that span have been read.
    """
    import av

    n_frames, video_t0_s, audio_t0_s, audio_end_s = 0, None, None, -np.inf
    audio_parts: list[np.ndarray] = []
    streams = [vstream] + ([astream] if astream is not None else [])
    fps = float(vstream.average_rate or vstream.guessed_rate)
    for frame in container.decode(*streams):
        if frame.time is None:
            continue
        if isinstance(frame, av.VideoFrame):
            if max_frames is not None and n_frames >= max_frames:
                if astream is None or audio_end_s >= video_t0_s + n_frames / fps:
                    break
                continue
            video_t0_s = frame.time if video_t0_s is None else video_t0_s
            if n_frames == len(frames):
                frames = np.concatenate([frames, np.empty_like(frames[: max(1, len(frames) // 2)])])
            _to_rgb(frame, frames[n_frames])
            n_frames += 1
        else:
            audio_t0_s = frame.time if audio_t0_s is None else audio_t0_s
            audio_end_s = frame.time + frame.samples / frame.sample_rate
            audio_parts.append(_mono_float(frame))
    if n_frames == 0:
        raise StageInputError("path", "the video stream has no decodable frames")
    return frames[:n_frames], video_t0_s, audio_parts, audio_t0_s


def _align_audio(parts: list[np.ndarray], rate: int, audio_t0_s: float | None, video_t0_s: float) -> np.ndarray:
    """Concatenated audio shifted so that index 0 is video time 0 (silence before, cut before)."""
    if not parts or audio_t0_s is None:
        return np.zeros(0, dtype=np.float32)
    audio = np.concatenate(parts)
    offset = int(round((audio_t0_s - video_t0_s) * rate))
    if offset > 0:
        return np.concatenate([np.zeros(offset, dtype=np.float32), audio])
    return audio[-offset:]


def _boxes(handle: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload offset, box end) of each MP4 box between `start` and `end`."""
    offset = start
    while offset + 8 <= end:
        handle.seek(offset)
        size, kind = struct.unpack(">I4s", handle.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", handle.read(8))[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header:
            return
        yield kind, offset + header, offset + size
        offset += size


def _track_facts(handle: BinaryIO, start: int, end: int, facts: dict) -> None:
    """Collect handler type and first edit's media_time of one trak."""
    for kind, payload, box_end in _boxes(handle, start, end):
        if kind in _CONTAINER_BOXES:
            _track_facts(handle, payload, box_end, facts)
        elif kind == b"hdlr":
            handle.seek(payload + 8)  # version/flags, pre_defined
            facts["handler"] = handle.read(4).decode("latin-1")
        elif kind == b"elst":
            handle.seek(payload)
            version = handle.read(1)[0]
            handle.seek(payload + 4)
            count = struct.unpack(">I", handle.read(4))[0]
            if count:
                fmt = ">Qq" if version == 1 else ">Ii"
                duration, media_time = struct.unpack(fmt, handle.read(struct.calcsize(fmt)))
                facts["edit_media_time"] = media_time
                facts["edit_count"] = count


def _box_layout(path: Path) -> dict:
    """faststart flag and per-handler edit-list media_time read straight from the MP4 boxes."""
    size = os.path.getsize(path)
    layout: dict = {"faststart": False, "edits": {}}
    with open(path, "rb") as handle:
        top = {kind: payload for kind, payload, _ in _boxes(handle, 0, size)}
        if b"moov" in top and b"mdat" in top:
            layout["faststart"] = top[b"moov"] < top[b"mdat"]
        for kind, payload, box_end in _boxes(handle, 0, size):
            if kind != b"moov":
                continue
            for sub, sub_payload, sub_end in _boxes(handle, payload, box_end):
                if sub == b"trak":
                    facts: dict = {}
                    _track_facts(handle, sub_payload, sub_end, facts)
                    if "handler" in facts:
                        layout["edits"][facts["handler"]] = facts.get("edit_media_time", 0)
    return layout


def probe_mp4(path: Path | str) -> dict:
    """What an MP4 holds: codecs, frame count, fps, size, durations, audio rate, faststart.

    Keys: video_codec, audio_codec, pix_fmt, profile, width, height, frames, fps, duration_s
    (of the video), video_start_s, audio_duration_s, audio_start_s, audio_sample_rate_hz,
    audio_channels, audio_priming_samples (skipped by the edit list), container_duration_s,
    faststart, bytes. Audio keys are None when there is no audio stream.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise StageInputError("path", "the file has no video stream", path=str(path))
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio else None
        frames = vstream.frames or sum(1 for p in container.demux(vstream) if p.size)
        info = {
            "video_codec": vstream.codec_context.name,
            "pix_fmt": vstream.codec_context.pix_fmt,
            "profile": vstream.codec_context.profile,
            "width": vstream.codec_context.width,
            "height": vstream.codec_context.height,
            "frames": int(frames),
            "fps": float(vstream.average_rate) if vstream.average_rate else None,
            "duration_s": _seconds(vstream.duration, vstream.time_base),
            "video_start_s": _seconds(vstream.start_time, vstream.time_base),
            "video_bit_rate": vstream.codec_context.bit_rate or None,
            "audio_codec": astream.codec_context.name if astream else None,
            "audio_sample_rate_hz": int(astream.sample_rate) if astream else None,
            "audio_channels": astream.codec_context.channels if astream else None,
            "audio_duration_s": _seconds(astream.duration, astream.time_base) if astream else None,
            "audio_start_s": _seconds(astream.start_time, astream.time_base) if astream else None,
            "audio_bit_rate": (astream.codec_context.bit_rate or None) if astream else None,
            "container_duration_s": container.duration / 1_000_000 if container.duration else None,
        }
    layout = _box_layout(path) if path.suffix.lower() in (".mp4", ".m4v", ".mov") else {"faststart": None, "edits": {}}
    info["faststart"] = layout["faststart"]
    info["audio_priming_samples"] = layout["edits"].get("soun") if astream else None
    info["bytes"] = path.stat().st_size
    return info
