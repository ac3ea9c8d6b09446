"""StreamingVerifier: fed a slot chunk by chunk as the warp renders it, it gives verify_slot's verdict.

The verdicts are compared field by field (all but verify_s, the time spent) on a slot rendered
with the mesh warp and on hand-made faults — a black chunk, a frozen stretch across a chunk
border, frames without a face — with chunks of 1, 7, 48 frames and the whole slab at once.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from verify_talking import FPS

from stages.errors import StageInputError
from stages.verify import StreamingVerifier, verify_slot
from stages.verify.checks import MAX_FROZEN_RUN_FRAMES, still_frames
from stages.verify.stream import join_rows
from tests.support.slots import render_frames

CHUNK_SIZES = (1, 7, 48, None)  # None: the whole slot in one chunk
SHORT_WINDOW_S = 2.0  # the synthetic cases measure lip sync on 2 s, so it ends mid-slot


def _streamed(frames: np.ndarray, speech, chunk: int | None, **options) -> dict:
    """The verdict (as a dict, without verify_s) of a StreamingVerifier fed `frames` in chunks."""
    chunk = chunk or len(frames)
    with StreamingVerifier(speech, FPS, len(frames), **options) as verifier:
        for start in range(0, len(frames), chunk):
            verifier.add_frames(frames[start : start + chunk], start)
        return _fields(verifier.verdict())


def _fields(verdict) -> dict:
    fields = verdict.as_dict()
    fields.pop("verify_s")
    return fields


def _assert_same_for_every_chunking(frames: np.ndarray, speech, **options) -> dict:
    """verify_slot's fields, after checking every chunk size gives exactly them."""
    whole = _fields(verify_slot(frames, speech, FPS, **options))
    for chunk in CHUNK_SIZES:
        assert _streamed(frames, speech, chunk, **options) == whole, f"chunks of {chunk}"
    return whole


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A 6 s slot rendered with the embedded mesh warp (espeak-ng speech)."""
    return render_frames({"slot_id": "stream-verify",
                          "speech": {"text": "Good evening. Watch the lips: maybe, people, and bubble."},
                          "motion": {"seed": 5}, "output": {"duration_s": 6}},
                         tmp_path_factory.mktemp("render"))


@pytest.mark.slow
def test_a_rendered_slot_gets_verify_slots_verdict_whatever_the_chunking(rendered) -> None:
    """A mesh-warped slot passes, and the streamed verdict equals verify_slot's for chunks of
    1, 7, 48 frames and the whole slab (the lip-sync window is the whole 6 s slot here)."""
    whole = _assert_same_for_every_chunking(rendered.frames, rendered.speech)
    assert whole["passed"], whole["problems"]
    assert whole["n_frames"] == 144 and whole["faces_checked"] == 12 and whole["face_ratio"] == 1.0
    assert whole["av_window_frames"] is not None and whole["av_lag_frames"] is not None


def test_a_black_chunk_is_found_whatever_the_chunking(talk, in_sync_frames) -> None:
    """Seven black frames (one 7-frame chunk, spread over two 48-frame ones) are counted and located the same way."""
    frames = in_sync_frames[:96].copy()
    frames[49:56] = 0
    whole = _assert_same_for_every_chunking(frames, talk[0], av_window_s=SHORT_WINDOW_S)
    assert whole["black_frames"] == 7 and whole["first_black_frame"] == 49
    assert "7 black frames (first at frame 49)" in whole["problems"]


def test_a_frozen_stretch_across_a_chunk_border_is_one_run(talk, in_sync_frames) -> None:
    """22 identical frames from frame 39 straddle the 48-frame border: one frozen run, reported from frame 39."""
    frames = in_sync_frames[:96].copy()
    frames[40:61] = frames[39]  # frame 39 differs from 38, and frame 61 from 39
    whole = _assert_same_for_every_chunking(frames, talk[0], av_window_s=SHORT_WINDOW_S)
    assert whole["longest_frozen_run_frames"] == 22 > MAX_FROZEN_RUN_FRAMES
    assert whole["frozen_run_start_frame"] == 39
    assert any("frozen for 22 frames" in p for p in whole["problems"])


def test_frames_without_a_face_are_found_whatever_the_chunking(talk, in_sync_frames) -> None:
    """A landscape from frame 48 on: 4 of the 8 sampled frames have a face, in every chunking."""
    frames = in_sync_frames[:96].copy()
    yy, xx = np.mgrid[0:512, 0:512]
    frames[48:] = np.stack([xx // 2, 128 + yy // 4, 255 - yy // 2], axis=-1).astype(np.uint8)
    frames[48::2, :, :, 0] += 1  # keep the picture changing, so only the face check fires there
    whole = _assert_same_for_every_chunking(frames, talk[0], av_window_s=SHORT_WINDOW_S)
    assert whole["faces_checked"] == 8 and whole["face_ratio"] == 0.5
    assert any("face found on only 4 of 8 sampled frames" in p for p in whole["problems"])


def test_lip_sync_is_measured_as_soon_as_the_windows_last_frame_is_in(talk, in_sync_frames) -> None:
    """With a 2 s window the offset is there after the chunk holding the window's last frame, not before,
    and it is the one the verdict reports."""
    frames = in_sync_frames[:96]
    with StreamingVerifier(talk[0], FPS, len(frames), av_window_s=SHORT_WINDOW_S) as verifier:
        start, stop = verify_slot(frames, talk[0], FPS, av_window_s=SHORT_WINDOW_S).av_window_frames
        verifier.add_frames(frames[: stop - 1], 0)
        assert verifier.av_offset is None and verifier.frames_received == stop - 1
        verifier.add_frames(frames[stop - 1 : stop + 3], stop - 1)
        assert verifier.av_offset is not None and verifier.av_offset.start_frame == start
        verifier.add_frames(frames[stop + 3 :], stop + 3)
        assert verifier.verdict().av_lag_frames == verifier.av_offset.lag_frames == 0


def test_chunks_of_one_slab_are_checked_without_copying_the_slot(talk, in_sync_frames) -> None:
    """Fed 7-frame views of one slab, the verifier allocates a quarter of the slot at most (scratch for
    a chunk's comparisons), though its 4 s lip-sync window is the whole slot: the window is a view of
    the slab, not a copy. Chunks that are separate arrays are joined by copying."""
    frames = in_sync_frames[:96]
    slot_bytes = frames.nbytes
    tracemalloc.start()
    try:
        with StreamingVerifier(talk[0], FPS, len(frames), av_window_s=4.0) as verifier:
            for start in range(0, len(frames), 7):
                verifier.add_frames(frames[start : start + 7], start)
            verifier.verdict()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert verifier.av_offset.n_frames == len(frames)
    assert peak < slot_bytes / 4, f"peak {peak} bytes for a {slot_bytes}-byte slot"
    pieces = [frames[0:7], frames[7:14], frames[14:15]]
    joined = join_rows(pieces)
    assert np.shares_memory(joined, frames) and np.array_equal(joined, frames[:15])
    copies = [piece.copy() for piece in pieces]
    joined = join_rows(copies)
    assert not any(np.shares_memory(joined, piece) for piece in copies) and np.array_equal(joined, frames[:15])


def test_still_frames_compare_across_a_border_given_the_frame_before() -> None:
    """still_frames on two runs, the second given the first's last frame, equals still_frames on the whole."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (30, 16, 16, 3), dtype=np.uint8)
    frames[9:14] = frames[8]  # a still stretch across a border at 10
    frames[20, 3, 3, 0] ^= 1  # a one-level change: still
    frames[20] = frames[19]
    whole = still_frames(frames)
    parts = np.concatenate([still_frames(frames[:10]), still_frames(frames[10:], previous=frames[9])])
    assert parts.tolist() == whole.tolist() and whole[9:14].all() and whole[10]
    assert not still_frames(frames[10:])[0]  # without the frame before, the first frame is never still


def test_chunks_that_do_not_fit_the_slot_are_refused(talk) -> None:
    """Out of order, past the end, another frame size, float frames, a verdict before the last frame
    or a chunk after it: StageInputError naming the frames; so is a slot of no frames, a window of
    no time or a face sample every 0 frames, naming the argument."""
    speech = talk[0]
    frames = np.full((10, 32, 32, 3), 90, np.uint8)
    verifier = StreamingVerifier(speech, FPS, 10)
    verifier.add_frames(frames[:4], 0)
    for bad, start in ((frames[:2], 6), (frames[:7], 4), (np.zeros((2, 16, 16, 3), np.uint8), 4),
                       (frames[:2].astype(np.float32), 4)):
        with pytest.raises(StageInputError) as caught:
            verifier.add_frames(bad, start)
        assert caught.value.field == "frames"
    with pytest.raises(StageInputError, match="after 4 of 10 frames"):
        verifier.verdict()
    verifier.add_frames(frames[4:4], 4)  # an empty chunk is no chunk
    verifier.add_frames(frames[4:], 4)
    verdict = verifier.verdict()
    assert verifier.verdict() is verdict and verdict.n_frames == 10
    with pytest.raises(StageInputError, match="closed"):
        verifier.add_frames(frames[:1], 10)
    for n_frames, options, field in ((0, {}, "frames"), (10, {"av_window_s": 0.0}, "av_window_s"),
                                     (10, {"face_every_n_frames": 0}, "face_every_n_frames")):
        with pytest.raises(StageInputError) as caught:
            StreamingVerifier(speech, FPS, n_frames, **options)
        assert caught.value.field == field
