"""What a slot's frames feed while they are warped: its stream, on disk as it is made, and the
objective checks of its verdict.

As each chunk lands in the slab, `SlotStream.add` encodes it into CMAF/HLS segments in the slot's
live staging folder (`<output_dir>/.live/<slot_id>/`: each segment written then renamed, the
playlist rewritten atomically, so a player can follow the slot while it renders). The finish
stage then publishes that same stream — the segments as `hls/` and `video.mp4` remuxed from
their packets — so the stream and the file decode to identical frames, and nothing is encoded
twice. The encoder runs on the warp's own thread, chunk after chunk (PyAV releases the GIL while
x264 works; a Python thread feeding it beside the warp slowed both). The checks of the verdict
(stages/verify/stream.py: faces, black and frozen frames, the lip-sync window as soon as it is
whole) run on a thread of their own, fed the chunks' frame ranges as they land: they read the
slab, which holds the frames until the slot is published, and are done about when the warp is.
"""

from __future__ import annotations

import errno
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_NEARLY_FULL_BYTES = 4 << 20
"""Less free space than a couple of segments: an unfinished stream is the disk's fault."""
LIVE_DIR_NAME = ".live"
"""Staging of the slots being made, inside the output folder (hidden: a slot id never starts with a dot)."""


@dataclass(frozen=True)
class StreamRecord:
    """A finished slot stream: its folder, its segments, and when the first one was readable."""

    folder: Path
    result: Any
    """stages.encode.stream.StreamResult."""
    first_segment_s: float | None
    """Seconds from the warp's start to the first segment readable on disk."""
    verdict: Any = None
    """The objective checks (stages.verify.Verdict) made on the chunks, or None when not verifying."""
    encode_s: float = 0.0
    verify_s: float = 0.0
    """Seconds the warp's thread spent encoding and checking (inside the warp stage's time)."""

    def manifest_fields(self) -> dict[str, Any]:
        """What the manifest says of the stream: the first segment's latency and every segment."""
        return {"first_segment_s": None if self.first_segment_s is None else round(self.first_segment_s, 4),
                "segments": [{"name": s.name, "start_frame": s.start_frame, "frames": s.n_frames,
                              "duration_s": round(s.duration_s, 6), "bytes": s.bytes, "sha256": s.sha256}
                             for s in self.result.segments]}


def live_folder(output_dir: Path, slot_id: str) -> Path:
    """Where a slot's segments appear while it renders."""
    return Path(output_dir) / LIVE_DIR_NAME / slot_id


class SlotStream:
    """Encodes a slot's warped chunks as they come (see the module docstring)."""

    def __init__(self, folder: Path, speech: Any, fps: int, n_frames: int, verify: bool,
                 on_segment: Callable[[int, int], None] | None = None) -> None:
        from stages.encode.stream import StreamEncoder
        from stages.verify.stream import StreamingVerifier

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._started = time.perf_counter()
        self._on_segment = on_segment or (lambda done, total: None)
        self._encoder = StreamEncoder(folder, fps, n_frames, speech.audio, speech.sample_rate_hz)
        self._n_segments = -(-n_frames // self._encoder.segment_frames)
        self._encode_s = 0.0
        self._checks = _BesideTheWarp(StreamingVerifier(speech, fps, n_frames)) if verify else None

    def add(self, frames: np.ndarray, start_frame: int) -> None:
        """Encode the next warped frames (in order) and queue them for the checks; report each
        segment that became readable."""
        if self._checks is not None:
            self._checks.feed(frames, start_frame)
        started = time.perf_counter()
        segments = self._encoder.add_frames(frames, start_frame)
        self._encode_s += time.perf_counter() - started
        for segment in segments:
            self._on_segment(segment.index + 1, self._n_segments)

    def close(self) -> StreamRecord:
        """Finish the stream (its last segment, the playlist's end) and the checks; say what they hold."""
        started = time.perf_counter()
        result = self._encoder.close()
        self._encode_s += time.perf_counter() - started
        _check_finished(result.playlist)
        self._on_segment(len(result.segments), len(result.segments))
        verdict = self._checks.verdict() if self._checks is not None else None
        first = None if result.first_segment_at is None else result.first_segment_at - self._started
        return StreamRecord(self.folder, result, first, verdict, self._encode_s,
                            verdict.verify_s if verdict is not None else 0.0)

    def abort(self) -> None:
        """Drop the stream and the checks: the files go (the warp failed or was interrupted)."""
        if self._checks is not None:
            self._checks.abandon()
        self._encoder.abort()
        shutil.rmtree(self.folder, ignore_errors=True)


def _check_finished(playlist: Path) -> None:
    """OSError unless the stream's playlist is whole: a full disk can leave it short of its end
    tag without the muxer raising, and that is the node's fault (the warp is tried again), not
    the recipe's."""
    try:
        whole = "#EXT-X-ENDLIST" in Path(playlist).read_text()
    except OSError as exc:
        raise OSError(f"the slot's stream playlist cannot be read: {exc}") from exc
    if not whole:
        free_bytes = shutil.disk_usage(Path(playlist).parent).free
        if free_bytes < _NEARLY_FULL_BYTES:
            raise OSError(errno.ENOSPC, f"No space left on device for the slot's stream ({free_bytes} bytes free)",
                          str(playlist))
        raise OSError(f"the slot's stream was not finished on disk ({playlist})")


class _BesideTheWarp:
    """The verdict's checks on a thread of their own, fed frame chunks in order through a queue."""

    def __init__(self, verifier: Any) -> None:
        self._verifier = verifier
        self._chunks: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="slot-checks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self._verifier.add_frames(*item)
                except BaseException as exc:  # kept for verdict(): the warp's thread raises it
                    self._error = exc

    def feed(self, frames: np.ndarray, start_frame: int) -> None:
        """Queue a chunk (a view of the slab: nothing is copied)."""
        self._chunks.put((frames, start_frame))

    def verdict(self) -> Any:
        """Wait for the queued chunks, then the verdict."""
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._verifier.verdict()

    def abandon(self) -> None:
        """Stop checking (the slot's warp failed): the thread ends, the face tracker is let go."""
        self._error = self._error or InterruptedError("checks abandoned")
        self._chunks.put(None)
        self._thread.join()
        self._verifier.close()


def publish_stream(stream: StreamRecord, folder: Path) -> None:
    """Put the finished stream into a slot folder being published: `hls/` (its playlist marked
    VOD, the slot being whole) and `video.mp4` remuxed from the same packets."""
    from stages.encode.stream import remux_mp4
    from stages.errors import StageInputError

    hls = folder / "hls"
    shutil.copytree(stream.folder, hls, ignore=shutil.ignore_patterns("*.tmp"))
    playlist = hls / "index.m3u8"
    # The muxer wrote a growing (EVENT) playlist with its end tag; published, the slot is VOD.
    playlist.write_text(playlist.read_text().replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD"))
    try:
        remux_mp4(hls, folder / "video.mp4")
    except StageInputError as exc:  # our own stream, not the recipe, is at fault: the node's fault
        raise RuntimeError(f"the slot's stream cannot be published: {exc}") from exc
