"""What a slot's frames feed while they are warped: its stream, on disk as it is made, and the
objective checks of its verdict.

As each chunk lands in the slab, `SlotStream.add` hands it to two threads of their own, each fed
the chunks' frame ranges in order through a queue (views of the slab, which holds the frames
until the slot is published: nothing is copied). The encoder's thread encodes them into
CMAF/HLS segments in the slot's live staging folder (`<output_dir>/.live/<slot_id>/`: each
segment written then renamed, the playlist rewritten atomically, so a player can follow the slot
while it renders). The checks' thread runs the checks of the verdict (stages/verify/stream.py:
faces, black and frozen frames, the lip-sync window as soon as it is whole). The warp's own
thread only renders, so the slot's three kinds of work share the cores and the slot is done
about when the slowest of them is, not when the warp and the encoding, one after the other, are.
The finish stage then publishes that same stream — the segments as `hls/` and `video.mp4`
remuxed from their packets — so the stream and the file decode to identical frames, and nothing
is encoded twice.
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
    """Seconds spent encoding and checking, each on its own thread beside the warp."""

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
    """Encodes and checks a slot's warped chunks as they come (see the module docstring)."""

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
        self._encoding = _ChunkThread("slot-encode", self._encode)
        self._verifier = StreamingVerifier(speech, fps, n_frames) if verify else None
        self._checks = _ChunkThread("slot-checks", self._verifier.add_frames) if self._verifier is not None else None

    def _encode(self, frames: np.ndarray, start_frame: int) -> None:
        """On the encoder's thread: encode a chunk, report each segment that became readable."""
        for segment in self._encoder.add_frames(frames, start_frame):
            self._on_segment(segment.index + 1, self._n_segments)

    def add(self, frames: np.ndarray, start_frame: int) -> None:
        """Queue the next warped frames (in order) for the encoder and the checks; returns at once.
        An error either met on an earlier chunk is raised here."""
        for worker in (self._encoding, self._checks):
            if worker is not None:
                worker.raise_error()
                worker.feed(frames, start_frame)

    def close(self) -> StreamRecord:
        """Wait for the queued chunks, finish the stream (its last segment, the playlist's end) and
        the checks; say what they hold."""
        self._encoding.finish()
        started = time.perf_counter()
        result = self._encoder.close()
        encode_s = self._encoding.busy_s + time.perf_counter() - started
        _check_finished(result.playlist)
        self._on_segment(len(result.segments), len(result.segments))
        verdict = None
        if self._checks is not None:
            self._checks.finish()
            verdict = self._verifier.verdict()
        first = None if result.first_segment_at is None else result.first_segment_at - self._started
        return StreamRecord(self.folder, result, first, verdict, encode_s,
                            verdict.verify_s if verdict is not None else 0.0)

    def abort(self) -> None:
        """Drop the stream and the checks: the files go (the warp failed or was interrupted)."""
        self._encoding.abandon()
        if self._checks is not None:
            self._checks.abandon()
            self._verifier.close()
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


class _ChunkThread:
    """`work(frames, start_frame)` for each queued chunk, in order, on a thread of its own."""

    def __init__(self, name: str, work: Callable[[np.ndarray, int], None]) -> None:
        self._work = work
        self._chunks: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.busy_s = 0.0
        """Seconds spent in `work`, all chunks."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._chunks.get()) is not None:
            if self._error is None:
                started = time.perf_counter()
                try:
                    self._work(*item)
                except BaseException as exc:  # kept for finish(): the caller's thread raises it
                    self._error = exc
                self.busy_s += time.perf_counter() - started

    def feed(self, frames: np.ndarray, start_frame: int) -> None:
        """Queue a chunk (a view of the slab: nothing is copied)."""
        self._chunks.put((frames, start_frame))

    def raise_error(self) -> None:
        """Raise the error an earlier chunk met, if any (the rest of the queue is skipped)."""
        if self._error is not None:
            raise self._error

    def finish(self) -> None:
        """Wait for the queued chunks; raise the error one of them met."""
        self._chunks.put(None)
        self._thread.join()
        self.raise_error()

    def abandon(self) -> None:
        """Stop working (the slot's warp failed): the chunks still queued are skipped, the thread ends."""
        self._error = self._error or InterruptedError("abandoned")
        self._chunks.put(None)
        self._thread.join()


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
