"""Streaming encode: frames become CMAF/HLS segments on disk while the warp is still running.

`StreamEncoder` takes a slot's frames in order, in chunks of any size, and encodes them (x264
with encode_mp4's CRF and preset, the slot's AAC audio) through FFmpeg's `hls` muxer into
fragmented-MP4 segments of at most `segment_s`, each starting on a keyframe. The layout on disk
and the shared audio/video timeline are described in stages/encode/hls.py. `remux_mp4` (in
stages/encode/remux.py, re-exported here) turns the finished stream into the slot's video.mp4
from the same packets.

Segment k covers frames [k·S, min((k+1)·S, n_frames)), S = floor(segment_s · fps). It is on
disk (renamed into place, listed in the playlist) as soon as the first frame of segment k+1 has
been encoded, or at close() for the last one. Everything is deterministic: the same frames and
audio give the same bytes (a fixed x264 thread count, bitexact muxers, no creation times).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.encode.hls import (
    INIT_NAME, PLAYLIST_NAME, PLAYLIST_TYPES, StreamTimeline, hls_muxer_options, own_file_names, segment_name,
)
from stages.encode.mp4 import (
    AAC_FRAME_SAMPLES, DEFAULT_CRF, DEFAULT_PRESET, add_aac_stream, add_h264_stream, check_frames, fit_audio,
    rgb_to_i420,
)
from stages.encode.remux import RemuxStats, remux_mp4
from stages.errors import StageInputError

__all__ = ["ENCODER_THREADS", "RemuxStats", "Segment", "StreamEncoder", "StreamResult", "remux_mp4"]

ENCODER_THREADS = 1
"""x264 threads, fixed: the bitstream depends on the slice count, so an automatic count would
make the bytes depend on the machine's cores. One: the encoder has a thread of its own beside the
warp and the checks (vortexd/slot_stream.py), so x264's slice threads only competed with them
for the same cores. Measured on the demo slot's 1080 frames, 2 cores, CRF 20: x264 itself took
1.05 s of CPU with 4 slice threads, 0.95 s with 1; the stream was 8.73 MB and 8.68 MB, PSNR
against the warped frames 41.08 and 41.07 dB. No frame
threads either (they add frame delay), so a segment closes as soon as the next one starts."""


@dataclass(frozen=True)
class Segment:
    """One media segment on disk: `name` in the stream folder, covering frames [start_frame, +n_frames)."""

    name: str
    index: int
    start_frame: int
    n_frames: int
    duration_s: float
    bytes: int
    sha256: str


@dataclass(frozen=True)
class StreamResult:
    """What `StreamEncoder.close` leaves: the finished stream and how long it took."""

    folder: Path
    playlist: Path  # folder / index.m3u8, ending in EXT-X-ENDLIST
    init: Path  # folder / init.mp4
    segments: tuple[Segment, ...]
    n_frames: int
    fps: int
    duration_s: float
    first_segment_s: float  # first add_frames call → first segment renamed into place
    first_segment_at: float  # time.perf_counter() when the first segment was seen on disk
    encode_s: float  # first add_frames call → close() done
    audio_padded_samples: int
    audio_trimmed_samples: int

    @property
    def frames_per_s(self) -> float:
        """Encode throughput in frames per wall-clock second (first add_frames → close)."""
        return self.n_frames / self.encode_s if self.encode_s > 0 else float("inf")


class StreamEncoder:
    """Encode a slot's frames, as they arrive, into HLS fMP4 segments in `folder`.

    Usage: `add_frames(chunk, start_frame)` for consecutive chunks, then `close()`; `abort()` (or
    leaving a `with` block by an exception) closes the muxer and removes the files written. HLS
    files already in `folder` (a crashed earlier run's) are removed at construction; other files
    are left alone. `audio` is float32 mono at `sample_rate_hz`, padded or trimmed to n_frames/fps.
    """

    def __init__(self, folder: Path, fps: int, n_frames: int, audio: np.ndarray, sample_rate_hz: int,
                 segment_s: float = 2.0, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET,
                 playlist_type: str = "event") -> None:
        _check_settings(fps, n_frames, sample_rate_hz, segment_s, playlist_type)
        self.folder, self.fps, self.n_frames = Path(folder), int(fps), int(n_frames)
        self.sample_rate_hz, self.crf, self.preset, self.playlist_type = int(sample_rate_hz), crf, preset, playlist_type
        self.segment_frames = max(1, int(segment_s * fps + 1e-9))
        self._timeline = StreamTimeline(self.fps, self.sample_rate_hz)
        n_samples = int(round(self.n_frames * self.sample_rate_hz / self.fps))
        self._samples, self._padded, self._trimmed = fit_audio(audio, n_samples)
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in own_file_names(self.folder):
            stale.unlink(missing_ok=True)
        self._container = self._video = self._audio = None
        self._shape: tuple[int, int] | None = None
        self._next_frame = self._next_block = 0
        self._segments: list[Segment] = []
        self._keyframes_muxed = 0
        self._started: float | None = None
        self._first_segment_at: float | None = None
        self._result: StreamResult | None = None
        self._aborted = False

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments on disk so far, in order."""
        return tuple(self._segments)

    @property
    def frames_added(self) -> int:
        """How many frames have been given to add_frames."""
        return self._next_frame

    def add_frames(self, frames: np.ndarray, start_frame: int) -> list[Segment]:
        """Encode `frames` ((T, H, W, 3) uint8 RGB), which must be frames start_frame … start_frame+T−1.

        Chunks must come in order with no gap; every chunk must have the first chunk's size
        H×W. Returns the segments that became complete on disk during this call (often none).
        """
        from av.video.frame import PictureType

        self._check_chunk(frames, start_frame)
        if self._started is None:
            self._started = time.perf_counter()
        if self._container is None:
            self._open(frames.shape[2], frames.shape[1])
        before = len(self._segments)
        for offset in range(len(frames)):
            index = start_frame + offset
            picture = rgb_to_i420(frames[offset])
            picture.pts = index
            if index % self.segment_frames == 0:
                picture.pict_type = PictureType.I  # a keyframe on every segment start, whatever x264 would pick
            self._mux_video(self._video.encode(picture))
            self._feed_audio(index + 1)
        self._next_frame = start_frame + len(frames)
        return self._segments[before:]

    def close(self) -> StreamResult:
        """Flush the encoders, finish the last segment and the playlist (EXT-X-ENDLIST); the result.

        Refuses (StageInputError "frames") if fewer than n_frames frames were added.
        """
        if self._result is not None:
            return self._result
        if self._aborted:
            raise StageInputError("frames", "the stream was aborted")
        if self._next_frame != self.n_frames or self._container is None:
            raise StageInputError("frames", "the stream is short of frames",
                                  added=self._next_frame, expected=self.n_frames)
        self._mux_video(self._video.encode(None))
        self._feed_audio(None)
        self._container.close()
        self._scan_segments(final=True)
        expected = -(-self.n_frames // self.segment_frames)
        if len(self._segments) != expected:
            raise RuntimeError(f"the hls muxer wrote {len(self._segments)} segments where {expected} were planned")
        done = time.perf_counter()
        self._result = StreamResult(
            folder=self.folder, playlist=self.folder / PLAYLIST_NAME, init=self.folder / INIT_NAME,
            segments=tuple(self._segments), n_frames=self.n_frames, fps=self.fps,
            duration_s=self.n_frames / self.fps, first_segment_s=self._first_segment_at - self._started,
            first_segment_at=self._first_segment_at,
            encode_s=done - self._started, audio_padded_samples=self._padded, audio_trimmed_samples=self._trimmed,
        )
        return self._result

    def abort(self) -> None:
        """Stop for good: close the muxer (errors ignored) and remove the stream's files (after close() too).

        Later add_frames/close calls are refused.
        """
        if self._container is not None and self._result is None:
            with contextlib.suppress(Exception):
                self._container.close()
        self._aborted, self._result = True, None
        for path in own_file_names(self.folder):
            path.unlink(missing_ok=True)

    def __enter__(self) -> StreamEncoder:
        """The encoder itself; leaving the block by an exception aborts it."""
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Abort when the block raised; a block that ends normally leaves closing to the caller."""
        if exc_type is not None:
            self.abort()

    def _check_chunk(self, frames: np.ndarray, start_frame: int) -> None:
        """Refuse a chunk out of order, past n_frames, of another size, or after close()."""
        if self._result is not None or self._aborted:
            raise StageInputError("frames", "the stream is already closed or aborted")
        check_frames(frames)
        if start_frame != self._next_frame:
            raise StageInputError("start_frame", "chunks must be added in order with no gap",
                                  start_frame=start_frame, expected=self._next_frame)
        if start_frame + len(frames) > self.n_frames:
            raise StageInputError("frames", "more frames than the slot has",
                                  end=start_frame + len(frames), n_frames=self.n_frames)
        if self._shape is not None and frames.shape[1:3] != self._shape:
            raise StageInputError("frames", "every chunk must have the first chunk's size",
                                  shape=frames.shape[1:3], expected=self._shape)
        self._shape = frames.shape[1:3]

    def _open(self, width: int, height: int) -> None:
        """Open the hls muxer with the x264 and AAC streams (encode_mp4's settings)."""
        import av

        options = hls_muxer_options(self.folder, self.segment_frames, self.fps, self.playlist_type)
        self._container = av.open(str(self.folder / PLAYLIST_NAME), mode="w", format="hls", options=options)
        # GOP = one segment, no scene-cut keyframes, no B-frames (no reorder delay before a
        # segment can close), a fixed thread count (deterministic bytes).
        self._video = add_h264_stream(
            self._container, self.fps, width, height, self.crf, self.preset, self.segment_frames,
            {"keyint_min": str(self.segment_frames), "sc_threshold": "0", "bf": "0", "threads": str(ENCODER_THREADS)},
        )
        self._video.time_base = self._timeline.time_base
        self._audio = add_aac_stream(self._container, self.sample_rate_hz)

    def _mux_video(self, packets) -> None:
        """Move video packets onto the shared timeline, mux them, and note segments that closed."""
        timeline = self._timeline
        for packet in packets:
            packet.pts = packet.pts * timeline.frame_ticks + timeline.priming_ticks
            packet.dts = packet.dts * timeline.frame_ticks + timeline.priming_ticks
            packet.duration = timeline.frame_ticks
            packet.time_base = timeline.time_base
            self._keyframes_muxed += bool(packet.is_keyframe)
            self._container.mux(packet)
            self._scan_segments()

    def _feed_audio(self, frames_done: int | None) -> None:
        """Encode and mux the audio blocks due once `frames_done` frames are in (None: all, then flush).

        One block beyond the video's end covers the AAC encoder's one-block delay, so the muxer
        (which interleaves by time) always holds audio past the last video packet and can pass
        that packet, and a segment boundary behind it, straight on to the hls muxer.
        """
        import av

        n_samples = len(self._samples)
        limit = n_samples if frames_done is None else frames_done * self.sample_rate_hz / self.fps + AAC_FRAME_SAMPLES
        while self._next_block * AAC_FRAME_SAMPLES < min(limit, n_samples):
            start = self._next_block * AAC_FRAME_SAMPLES
            block = self._samples[start : start + AAC_FRAME_SAMPLES]
            sound = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            sound.sample_rate, sound.pts = self.sample_rate_hz, start
            self._mux_audio(self._audio.encode(sound))
            self._next_block += 1
        if frames_done is None:
            self._mux_audio(self._audio.encode(None))

    def _mux_audio(self, packets) -> None:
        """Shift audio packets so the priming packet starts at 0 (see stages/encode/hls.py) and mux them."""
        for packet in packets:
            packet.pts += AAC_FRAME_SAMPLES
            packet.dts += AAC_FRAME_SAMPLES
            self._container.mux(packet)
            self._scan_segments()

    def _scan_segments(self, final: bool = False) -> None:
        """Record every segment file renamed into place since the last look.

        The hls muxer closes a segment only when the next one's keyframe reaches it, which the
        interleaving queue may hold back until audio catches up: so the folder is looked at
        after a packet is muxed only while a keyframe has been muxed whose segment before it is
        not yet seen (a few packets per segment, not a stat after each of ~2,100 packets).
        `final`: the muxer is closed; every segment left is on disk.
        """
        while final or len(self._segments) < self._keyframes_muxed - 1:
            index = len(self._segments)
            path = self.folder / segment_name(index)
            if not path.is_file():
                return
            data = path.read_bytes()
            start = index * self.segment_frames
            count = min(self.segment_frames, self.n_frames - start)
            self._segments.append(Segment(
                name=path.name, index=index, start_frame=start, n_frames=count, duration_s=count / self.fps,
                bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
            ))
            if self._first_segment_at is None:
                self._first_segment_at = time.perf_counter()


def _check_settings(fps: int, n_frames: int, sample_rate_hz: int, segment_s: float, playlist_type: str) -> None:
    """Refuse settings the stream cannot be made with, naming the field."""
    if not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise StageInputError("output.fps", "fps must be a positive integer", fps=fps)
    if not isinstance(n_frames, (int, np.integer)) or n_frames <= 0:
        raise StageInputError("n_frames", "a stream needs at least one frame", n_frames=n_frames)
    if not isinstance(sample_rate_hz, (int, np.integer)) or sample_rate_hz <= 0:
        raise StageInputError("speech.sample_rate_hz", "sample rate must be a positive integer",
                              sample_rate_hz=sample_rate_hz)
    if not segment_s * fps >= 1:
        raise StageInputError("segment_s", "a segment must hold at least one frame", segment_s=segment_s, fps=fps)
    if playlist_type not in PLAYLIST_TYPES:
        raise StageInputError("playlist_type", f"expected one of {PLAYLIST_TYPES}", playlist_type=playlist_type)
