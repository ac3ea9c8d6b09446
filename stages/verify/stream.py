"""Verify beside the warp: the frame checks run on each chunk of a slot as it is rendered.

`StreamingVerifier` takes a slot's frames chunk by chunk, in order, and does each check's work
on the chunk in hand — face presence on its sampled frames, black frames, the frozen-picture
comparison (across chunk borders, against the frame before), and the lip-sync measurement as
soon as the window's last frame is in — so that little is left when the last chunk lands.
`verify_slot` is the same verifier fed a whole slab at once; both give the same Verdict (all
but `verify_s`) on the same frames, because both run the one implementation of each check in
stages.verify.checks.
"""

from __future__ import annotations

import time

import numpy as np

from stages.errors import StageInputError
from stages.image.face import FaceTracker
from stages.types import Speech
from stages.verify.checks import (
    AV_WINDOW_S,
    FACE_SAMPLE_EVERY_N_FRAMES,
    Verdict,
    black_frame_mask,
    check_frames,
    make_verdict,
    measure_window,
    sampled_faces,
    speech_facts,
    still_frames,
)
from stages.verify.lipsync import AVOffset


def _owner(array: np.ndarray) -> object:
    """The object that owns `array`'s memory (the end of its chain of bases)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array if array.base is None else array.base


def join_rows(pieces: list[np.ndarray]) -> np.ndarray:
    """Consecutive runs of frames as one (T, H, W, 3) array, without a copy where they can be.

    Runs cut from one slab one after the other (the warp's chunks) lie end to end in its memory:
    they are joined as a read-only view of it. Anything else (separate arrays) is copied.
    """
    first = pieces[0]
    if len(pieces) == 1:
        return first
    owner, address = _owner(first), first.__array_interface__["data"][0]
    for piece in pieces:
        if (piece.strides != first.strides or piece.shape[1:] != first.shape[1:] or _owner(piece) is not owner
                or piece.__array_interface__["data"][0] != address):
            return np.concatenate(pieces)
        address += len(piece) * first.strides[0]
    # Same owner and end to end: the span lies inside the owner's memory, which the view keeps alive.
    total = sum(len(piece) for piece in pieces)
    return np.lib.stride_tricks.as_strided(first, (total, *first.shape[1:]), first.strides, writeable=False)


class StreamingVerifier:
    """Checks a slot's frames as they are rendered; `verdict()` after the last chunk.

    `speech` is the slot's track (audio sample 0 at frame 0), `n_frames` the slot's length.
    The audio checks run here, at once. Feed every frame exactly once, in order, through
    `add_frames`; the verifier keeps references to the rows it still needs (the previous frame,
    the lip-sync window's rows until it is measured), never a copy of the slot, so those rows
    must stay unchanged until `verdict()` (a warp slab does). One caller at a time: calls must
    not overlap. Use it as a context manager, or call close(), if a slot is abandoned before
    its verdict, to release the face tracker.
    """

    def __init__(self, speech: Speech, fps: int, n_frames: int, *, av_window_s: float = AV_WINDOW_S,
                 face_every_n_frames: int = FACE_SAMPLE_EVERY_N_FRAMES) -> None:
        started = time.perf_counter()
        if face_every_n_frames < 1:
            raise StageInputError("face_every_n_frames", "must be at least 1", face_every_n_frames=face_every_n_frames)
        if not av_window_s > 0:
            raise StageInputError("av_window_s", "must be positive", av_window_s=av_window_s)
        self._speech, self._every = speech, int(face_every_n_frames)
        self._facts = speech_facts(speech, fps, int(n_frames), av_window_s)
        self._still = np.zeros(self._facts.n_frames, dtype=bool)
        self._black = np.zeros(self._facts.n_frames, dtype=bool)
        self._faces: list[np.ndarray] = []
        self._tracker: FaceTracker | None = None
        self._previous: np.ndarray | None = None  # the last frame received: the next chunk's "before"
        self._window_rows: list[np.ndarray] = []
        self._offset: AVOffset | None = None
        self._received = 0
        self._verdict: Verdict | None = None
        self._closed = False
        self._busy_s = time.perf_counter() - started  # time spent in this verifier's calls

    @property
    def frames_received(self) -> int:
        """How many of the slot's frames have been added (the next chunk starts there)."""
        return self._received

    @property
    def av_offset(self) -> AVOffset | None:
        """The lip-sync measurement, once the window's last frame is in (None before, or without speech)."""
        return self._offset

    def add_frames(self, frames: np.ndarray, start_frame: int) -> None:
        """Check slot frames start_frame … start_frame+T−1 (a (T, H, W, 3) uint8 chunk, any T ≥ 0).

        Raises StageInputError for a chunk out of order, past the slot's end, of another frame
        size than the earlier ones, or after the verdict.
        """
        started = time.perf_counter()
        self._accept(frames, start_frame)
        if len(frames):
            stop = start_frame + len(frames)
            self._black[start_frame:stop] = black_frame_mask(frames)
            self._still[start_frame:stop] = still_frames(frames, self._facts.speaking[start_frame:stop],
                                                         self._previous)
            if self._tracker is None:
                self._tracker = FaceTracker()
            self._faces.append(sampled_faces(self._tracker, frames, start_frame, self._every))
            self._previous, self._received = frames[-1], stop
            self._follow_window(frames, start_frame)
        self._busy_s += time.perf_counter() - started

    def verdict(self) -> Verdict:
        """The slot's Verdict, once every frame is in; the same object on later calls.

        Its `verify_s` is the time spent in this verifier's calls, all chunks included.
        """
        if self._verdict is not None:
            return self._verdict
        n_frames = self._facts.n_frames
        if self._received < n_frames:
            raise StageInputError("frames", f"verdict asked after {self._received} of {n_frames} frames",
                                  received=self._received, n_frames=n_frames)
        started = time.perf_counter()
        self.close()
        faces = np.concatenate(self._faces)
        self._verdict = make_verdict(self._facts, faces, self._offset, self._still, self._black,
                                     self._busy_s + time.perf_counter() - started)
        return self._verdict

    def close(self) -> None:
        """Release the face tracker and the rows held; no frame may be added afterwards."""
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self._previous, self._window_rows = None, []
        self._closed = True

    def __enter__(self) -> "StreamingVerifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, frames: np.ndarray, start_frame: int) -> None:
        """Refuse a chunk that cannot be the slot's next one."""
        if self._closed:
            raise StageInputError("frames", "the verifier is closed (its verdict was given or the slot abandoned)")
        check_frames(frames)
        if start_frame != self._received:
            raise StageInputError("frames", f"chunks must arrive in order: expected frame {self._received}, "
                                  f"got {start_frame}", start_frame=start_frame)
        if start_frame + len(frames) > self._facts.n_frames:
            raise StageInputError("frames", f"frames {start_frame}–{start_frame + len(frames)} run past the "
                                  f"slot's {self._facts.n_frames}", n_frames=self._facts.n_frames)
        if self._previous is not None and len(frames) and frames.shape[1:] != self._previous.shape:
            raise StageInputError("frames", "frame size changed between chunks",
                                  shape=frames.shape[1:], before=self._previous.shape)

    def _follow_window(self, frames: np.ndarray, start_frame: int) -> None:
        """Hold the chunk's rows inside the lip-sync window; measure once its last frame is in."""
        window = self._facts.av_window
        if window is None or self._offset is not None:
            return
        stop = start_frame + len(frames)
        lo, hi = max(window[0], start_frame), min(window[1], stop)
        if lo < hi:
            self._window_rows.append(frames[lo - start_frame : hi - start_frame])
        if stop >= window[1]:
            rows, self._window_rows = self._window_rows, []
            # A window shorter than a frame holds no rows: measured on none, it says so in its notes.
            self._offset = measure_window(join_rows(rows) if rows else frames[:0], self._speech, self._facts)


def verify_slot(
    frames: np.ndarray,
    speech: Speech,
    fps: int = 24,
    *,
    av_window_s: float = AV_WINDOW_S,
    face_every_n_frames: int = FACE_SAMPLE_EVERY_N_FRAMES,
) -> Verdict:
    """Run every objective check on a rendered slot and say whether it may go on air.

    `frames` is the (T, H, W, 3) uint8 slab, `speech` the track it was rendered from (audio
    sample 0 at frame 0). Checks: face present on sampled frames, lip-sync offset and
    correlation on the first `av_window_s` of speech, frozen picture while speaking, black
    frames, audio clipping, silent track. Takes ~1.5–2 s for a 1080-frame slot on 2 cores;
    a StreamingVerifier fed the whole slab at once.
    """
    check_frames(frames)
    with StreamingVerifier(speech, fps, len(frames), av_window_s=av_window_s,
                           face_every_n_frames=face_every_n_frames) as verifier:
        verifier.add_frames(frames, 0)
        return verifier.verdict()
