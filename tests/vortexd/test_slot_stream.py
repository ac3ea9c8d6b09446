"""A slot's stream is encoded on a thread of its own, beside the warp, and still whole and in order."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.types import Speech
from vortexd.slot_stream import SlotStream

FPS, N_FRAMES, CHUNK = 24, 72, 16


def _frames() -> np.ndarray:
    rng = np.random.default_rng(5)
    frames = np.empty((N_FRAMES, 64, 64, 3), np.uint8)
    for i in range(N_FRAMES):  # a moving gradient: every frame differs, so every frame costs bits
        frames[i] = (np.add.outer(np.arange(64), np.arange(64))[..., None] * 2 + i * 3) % 256
    frames[:, ::7] = rng.integers(0, 255, frames[:, ::7].shape, dtype=np.uint8)
    return frames


def _speech() -> Speech:
    t = np.arange(N_FRAMES * 1000) / 24_000
    return Speech(audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), phonemes=(), voice="test",
                  backend="test")


def test_chunks_are_encoded_off_the_callers_thread_into_a_whole_stream(tmp_path: Path) -> None:
    segment_threads: list[threading.Thread] = []
    stream = SlotStream(tmp_path / "live", _speech(), FPS, N_FRAMES, verify=False,
                        on_segment=lambda done, total: segment_threads.append(threading.current_thread()))
    frames = _frames()
    for start in range(0, N_FRAMES, CHUNK):
        stream.add(frames[start : start + CHUNK], start)
    record = stream.close()
    assert [s.start_frame for s in record.result.segments] == [0, 48]
    assert sum(s.n_frames for s in record.result.segments) == N_FRAMES
    assert "#EXT-X-ENDLIST" in (tmp_path / "live" / "index.m3u8").read_text()
    # Segments became readable on the encoder's thread, not on the thread that fed the frames.
    assert segment_threads[0] is not threading.current_thread()
    assert record.encode_s > 0


def test_an_error_met_on_the_encoders_thread_reaches_the_warp_and_abort_cleans_up(tmp_path: Path) -> None:
    folder = tmp_path / "live"
    stream = SlotStream(folder, _speech(), FPS, N_FRAMES, verify=False)
    frames = _frames()
    stream.add(frames[:CHUNK], 0)
    smaller = np.ascontiguousarray(frames[CHUNK : 2 * CHUNK, :32, :32])
    stream.add(smaller, CHUNK)  # another frame size than the first chunk's: the encoder refuses it
    with pytest.raises(StageInputError):
        for start in range(2 * CHUNK, N_FRAMES, CHUNK):
            stream.add(frames[start : start + CHUNK], start)
        stream.close()
    stream.abort()
    assert not folder.exists()


def test_the_same_frames_give_the_same_segment_bytes_every_time(tmp_path: Path) -> None:
    digests = []
    for attempt in ("a", "b"):
        stream = SlotStream(tmp_path / attempt, _speech(), FPS, N_FRAMES, verify=False)
        frames = _frames()
        for start in range(0, N_FRAMES, CHUNK):
            stream.add(frames[start : start + CHUNK], start)
        digests.append([s.sha256 for s in stream.close().result.segments])
    assert digests[0] == digests[1]
