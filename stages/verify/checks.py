"""The embedded verify stage: objective checks a slot must pass before it goes on air.

Each check measures one thing a viewer would notice — no face, mouth out of sync, a picture
that freezes while the voice goes on, black frames, a clipped or silent voice — and reports it
as a plain sentence. Thresholds are the module constants below.

This module holds each check once, in pieces that work on any run of consecutive frames:
`speech_facts` (the audio checks, and the masks the frame checks need, before any frame),
`sampled_faces`, `black_frame_mask`, `still_frames` (across run borders given the frame
before), `measure_window` (lip sync on the window), and `make_verdict` to judge what they
found. stages.verify.stream feeds them: `StreamingVerifier` chunk by chunk as the warp
renders, `verify_slot` a whole slab at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stages.errors import StageInputError
from stages.image.face import FaceTracker
from stages.types import Speech
from stages.verify.lipsync import AVOffset, frame_rms, measure_av_offset

FACE_SAMPLE_EVERY_N_FRAMES = 12
"""Face presence is checked on every 12th frame (two per second at 24 fps)."""

MIN_FACE_RATIO = 0.95
"""At least 95 % of the sampled frames must show a face the mesh can track."""

AV_WINDOW_S = 12.0
"""Lip sync is measured densely on the first 12 s of speech (~1 s of face tracking)."""

AV_WINDOW_LEAD_S = 0.5
"""The lip-sync window starts this long before the first speech, so onsets are inside it."""

MAX_AV_OFFSET_FRAMES = 2
"""|offset| above 2 frames (83 ms at 24 fps) against the audio or the phonemes fails: the seed's
acceptance bound. The design target is ±1, tracked through the lip-sync metric rather than
failing slots on it."""

MIN_LIPSYNC_CORRELATION = 0.3
"""The mouth must follow the speech: the better of the envelope and phoneme correlations must
reach 0.3. Calibrated on the embedded demo slot (12 s windows): in sync it scored 0.37–0.52
(envelope) and 0.48–0.67 (phonemes); against speech from another part of the slot (a mouth
that does not belong to the voice) the 95th percentile was 0.24 and 0.22."""

FROZEN_MAX_ABS_DIFF = 1
"""Two frames whose pixels all differ by at most 1 count as the same picture."""

MAX_FROZEN_RUN_FRAMES = 12
"""While the voice is active, the picture must not stand still for more than 12 frames (0.5 s)."""

BLACK_MEAN_LEVEL = 10.0
"""A frame whose mean pixel value (0–255) is at most this is black."""

MAX_BLACK_FRAMES = 0
"""No black frame is acceptable in a talking-head slot."""

CLIP_LEVEL = 0.999
"""An audio sample at or beyond ±0.999 full scale counts as clipped."""

MAX_CLIPPED_FRACTION = 1e-3
"""More than 0.1 % clipped samples is audible distortion."""

SPEECH_FLOOR_DBFS = -50.0
"""A frame is voiced only above this level (and within SPEECH_BELOW_PEAK_DB of the loudest frame)."""

SPEECH_BELOW_PEAK_DB = 35.0

SPEECH_GAP_BRIDGE_S = 0.5
"""Pauses up to 0.5 s between voiced frames still count as speaking for the frozen-picture check
(a face does not freeze between the words of a sentence)."""

_COARSE_ROW_STEP = 16
"""The frozen-picture pre-check looks at every 16th row first: a face that moves at all changes
pixels on many rows, so on a talking slot no frame survives it (measured on the demo slot, as with
every 4th row) at a quarter of the reading; survivors are still compared in full."""
_CHUNK_FRAMES = 48  # frames compared per vectorised step (bounded scratch memory)


@dataclass(frozen=True)
class Verdict:
    """The verify stage's result: pass/fail, the problems in words, and what was measured.

    Every field is JSON-ready after dataclasses.asdict (None where a value could not be measured).
    """

    passed: bool
    problems: tuple[str, ...]
    n_frames: int
    fps: int
    faces_checked: int
    face_ratio: float
    av_lag_frames: int | None  # headline lag (+ = video late, mouth after the sound)
    av_lag_ms: float | None  # headline lag from the sub-frame refined peak
    av_correlation: float | None
    av_reference: str | None  # where the headline comes from: "envelope" (audio) or "phonemes"
    av_lag_envelope_frames: int | None
    av_lag_phonemes_frames: int | None
    av_correlation_envelope: float | None
    av_correlation_phonemes: float | None
    av_window_frames: tuple[int, int] | None  # [start, end) frames the offset was measured on
    longest_frozen_run_frames: int
    frozen_run_start_frame: int | None
    black_frames: int
    first_black_frame: int | None
    clipped_fraction: float
    speech_active_fraction: float  # frames with voice / all frames
    audio_peak_dbfs: float | None  # None for digital silence
    verify_s: float  # seconds spent checking (streamed: summed over the verifier's calls, all chunks)
    clip: dict | None = None  # the CLIP ensemble's scores (stages.verify.clip.judge), when configured

    def as_dict(self) -> dict:
        """The verdict as a plain JSON-ready dict (for manifests and the control socket)."""
        return asdict(self)


def check_frames(frames: np.ndarray) -> None:
    """Raise StageInputError (field "frames") unless `frames` is a (T, H, W, 3) uint8 RGB array."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise StageInputError("frames", "expected a (T, H, W, 3) uint8 RGB array",
                              shape=getattr(frames, "shape", None), dtype=str(getattr(frames, "dtype", None)))


def check_slot(speech: Speech, fps: int, n_frames: int) -> None:
    """Raise StageInputError unless a slot of `n_frames` frames at `fps` with `speech` can be verified."""
    if n_frames <= 0:
        raise StageInputError("frames", "no frames to verify", n_frames=n_frames)
    if not isinstance(speech, Speech):
        raise StageInputError("speech", f"expected a Speech, got {type(speech).__name__}")
    if fps <= 0:
        raise StageInputError("output.fps", "fps must be positive", fps=fps)


def voiced_frames(speech: Speech, fps: int, n_frames: int) -> np.ndarray:
    """(n_frames,) bool: frames during which the voice is audible (see SPEECH_* constants)."""
    level_db = 20 * np.log10(np.maximum(frame_rms(speech.audio, speech.sample_rate_hz, fps, n_frames), 1e-10))
    if n_frames == 0:
        return np.zeros(0, dtype=bool)
    return level_db >= max(SPEECH_FLOOR_DBFS, float(level_db.max()) - SPEECH_BELOW_PEAK_DB)


def bridge_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """`mask` with every run of False of length ≤ max_gap between two Trues set to True."""
    bridged = np.asarray(mask, dtype=bool).copy()
    for lo, hi in _runs(np.flatnonzero(~bridged)):
        if lo > 0 and hi < len(bridged) and hi - lo <= max_gap:
            bridged[lo:hi] = True
    return bridged


def sampled_faces(tracker: FaceTracker, frames: np.ndarray, start_frame: int = 0,
                  every_n_frames: int = FACE_SAMPLE_EVERY_N_FRAMES) -> np.ndarray:
    """Whether a face is tracked on each sampled frame (slot frame index a multiple of
    `every_n_frames`) among `frames`, which are slot frames start_frame, start_frame+1, ….

    `tracker` carries its tracking state from one call to the next, so feeding a slot's
    frames in consecutive runs gives the same answers as feeding them all at once.
    """
    first = -start_frame % every_n_frames
    return np.array([tracker.landmarks(frames[i]) is not None for i in range(first, len(frames), every_n_frames)],
                    dtype=bool)


def face_presence(frames: np.ndarray, every_n_frames: int = FACE_SAMPLE_EVERY_N_FRAMES) -> np.ndarray:
    """(ceil(T / every_n_frames),) bool: whether a face is tracked on frames 0, n, 2n, …"""
    with FaceTracker() as tracker:
        return sampled_faces(tracker, frames, 0, every_n_frames)


def _max_abs_diff(current: np.ndarray, previous: np.ndarray, rows: slice) -> np.ndarray:
    """max |current[i] − previous[i]| over the given rows, for each i."""
    current, previous = current[:, rows], previous[:, rows]
    # max − min stays in uint8 (no widening copy) and equals the absolute difference.
    diff = np.maximum(current, previous)
    diff -= np.minimum(current, previous)
    return diff.reshape(len(diff), -1).max(axis=1)


def _still_pairs(current: np.ndarray, previous: np.ndarray, consider: np.ndarray) -> np.ndarray:
    """Whether current[i] equals previous[i] within FROZEN_MAX_ABS_DIFF, where consider[i]."""
    still = np.zeros(len(current), dtype=bool)
    if not consider.any():
        return still
    coarse = _max_abs_diff(current, previous, slice(None, None, _COARSE_ROW_STEP))
    # The coarse pass is exact in one direction: a change on a sampled row is a change.
    for lo, hi in _runs(np.flatnonzero((coarse <= FROZEN_MAX_ABS_DIFF) & consider)):
        still[lo:hi] = _max_abs_diff(current[lo:hi], previous[lo:hi], slice(None)) <= FROZEN_MAX_ABS_DIFF
    return still


def still_frames(frames: np.ndarray, consider: np.ndarray | None = None,
                 previous: np.ndarray | None = None) -> np.ndarray:
    """(T,) bool: frame i differs from the frame before it by at most FROZEN_MAX_ABS_DIFF everywhere.

    The frame before frames[0] is `previous` (an (H, W, 3) frame) when given, so a slot checked
    in consecutive runs is compared across their borders; without it frames[0] is False. Only
    frames where `consider` is True are examined (others are False). A cheap pass over every 16th
    row rules most frames out; only the survivors are compared in full.
    """
    n = len(frames)
    consider = np.ones(n, dtype=bool) if consider is None else np.asarray(consider, dtype=bool)
    still = np.zeros(n, dtype=bool)
    if previous is not None and n:
        still[:1] = _still_pairs(frames[:1], previous[None], consider[:1])
    for start in range(1, n, _CHUNK_FRAMES):  # bounded scratch memory per step
        stop = min(n, start + _CHUNK_FRAMES)
        still[start:stop] = _still_pairs(frames[start:stop], frames[start - 1 : stop - 1], consider[start:stop])
    return still


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Sorted integer indices grouped into consecutive [lo, hi) ranges."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist()))


def longest_true_run(mask: np.ndarray) -> tuple[int, int | None]:
    """(length, start index) of the longest run of True in `mask` ((0, None) if there is none)."""
    runs = _runs(np.flatnonzero(mask))
    if not runs:
        return 0, None
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    return hi - lo, lo


def black_frame_mask(frames: np.ndarray) -> np.ndarray:
    """(T,) bool: frames whose mean pixel value is at most BLACK_MEAN_LEVEL (on a 1/16 pixel grid)."""
    grid = frames[:, ::4, ::4]
    # An integer sum against the level times the count: the mean's test, exactly, without floats.
    total = grid.sum(axis=(1, 2, 3), dtype=np.uint64)
    return total <= BLACK_MEAN_LEVEL * grid[0].size


def _av_window(voiced: np.ndarray, fps: int, window_s: float) -> tuple[int, int] | None:
    onsets = np.flatnonzero(voiced)
    if len(onsets) == 0:
        return None
    start = max(0, int(onsets[0]) - int(round(AV_WINDOW_LEAD_S * fps)))
    return start, min(len(voiced), start + int(round(window_s * fps)))


def _lipsync_problems(offset: AVOffset | None, window: tuple[int, int] | None) -> list[str]:
    if window is None or offset is None:
        return []  # no speech: reported by the silence check
    if offset.best is None:
        reason = "; ".join(offset.notes) or "no usable measurement"
        return [f"lip-sync offset could not be measured on frames {window[0]}–{window[1]} ({reason})"]
    problems = []
    measured = [(name, r) for name, r in (("the audio", offset.envelope), ("the phonemes", offset.phoneme))
                if r is not None]
    # When the two references disagree, the one the mouth follows more closely decides: on a
    # short utterance the loudness envelope can peak at the wrong lag (nasals like the m and n
    # of "daemon" are loud with the lips closed) while the phoneme timeline shows it in sync.
    best_in_sync = max((r.correlation for _, r in measured if abs(r.lag_frames) <= MAX_AV_OFFSET_FRAMES),
                       default=-np.inf)
    for name, result in measured:
        if abs(result.lag_frames) > MAX_AV_OFFSET_FRAMES and result.correlation >= best_in_sync:
            side = "late" if result.lag_frames > 0 else "early"
            problems.append(f"lip-sync offset against {name} {result.lag_frames:+d} frames "
                            f"({result.lag_frames * 1000 / offset.fps:+.0f} ms, video {side}) "
                            f"exceeds ±{MAX_AV_OFFSET_FRAMES} frames")
    strongest = max((r for _, r in measured), key=lambda r: r.correlation)
    if strongest.correlation < MIN_LIPSYNC_CORRELATION:
        problems.append(f"the mouth barely follows the speech (correlation {strongest.correlation:.2f} < "
                        f"{MIN_LIPSYNC_CORRELATION:.2f})")
    return problems


def _frozen_check(still: np.ndarray, fps: int) -> tuple[int, int | None, list[str]]:
    """Longest run of identical frames while speaking, from the still_frames mask: (frames, first frame, problems)."""
    flags, first = longest_true_run(still)
    # k consecutive "same as the previous frame" flags are k+1 identical frames, starting one earlier.
    run, start = (flags + 1, first - 1) if flags else (0, None)
    if run <= MAX_FROZEN_RUN_FRAMES:
        return run, start, []
    return run, start, [f"the picture is frozen for {run} frames ({run / fps:.2f} s) from frame {start} "
                        f"while the voice goes on (limit {MAX_FROZEN_RUN_FRAMES})"]


def _black_check(black: np.ndarray) -> tuple[int, int | None, list[str]]:
    """Black frames, from the black_frame_mask: (count, first index, problems)."""
    count = int(black.sum())
    first = int(np.argmax(black)) if count else None
    if count <= MAX_BLACK_FRAMES:
        return count, first, []
    return count, first, [f"{count} black frame{'s' if count > 1 else ''} (first at frame {first})"]


def _audio_checks(audio: np.ndarray, voiced: np.ndarray) -> tuple[bool, float | None, float, list[str]]:
    """Whether the track is silent, its peak level, clipped fraction, and the problems found."""
    problems = []
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    peak_dbfs = 20 * np.log10(peak) if peak > 0 else None
    silent = peak_dbfs is None or peak_dbfs < SPEECH_FLOOR_DBFS or not voiced.any()
    if silent:
        level = "digital silence" if peak_dbfs is None else f"peak {peak_dbfs:.1f} dBFS"
        problems.append(f"the speech track is silent ({level})")
    clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL)) if len(audio) else 0.0
    if clipped > MAX_CLIPPED_FRACTION:
        problems.append(f"the audio clips on {clipped:.2%} of samples (limit {MAX_CLIPPED_FRACTION:.2%})")
    return silent, peak_dbfs, clipped, problems


def _lipsync_fields(offset: AVOffset | None) -> dict[str, Any]:
    """The Verdict's lip-sync fields from the measured `offset` (all None where none was measured)."""
    best = offset.best if offset is not None else None
    envelope = offset.envelope if offset is not None else None
    phoneme = offset.phoneme if offset is not None else None
    return {
        "av_lag_frames": best.lag_frames if best else None,
        "av_lag_ms": round(offset.lag_ms, 1) if best else None,
        "av_correlation": round(best.correlation, 4) if best else None,
        "av_reference": offset.reference if offset is not None else None,
        "av_lag_envelope_frames": envelope.lag_frames if envelope else None,
        "av_lag_phonemes_frames": phoneme.lag_frames if phoneme else None,
        "av_correlation_envelope": round(envelope.correlation, 4) if envelope else None,
        "av_correlation_phonemes": round(phoneme.correlation, 4) if phoneme else None,
    }


@dataclass(frozen=True)
class SpeechFacts:
    """What the speech alone says about a slot, known before any frame is rendered."""

    n_frames: int
    fps: int
    voiced: np.ndarray  # (n_frames,) bool: the voice is audible (all False for a silent track)
    speaking: np.ndarray  # (n_frames,) bool: voiced with short pauses bridged (the frozen check's frames)
    av_window: tuple[int, int] | None  # [start, end) frames lip sync is measured on; None without speech
    peak_dbfs: float | None
    clipped_fraction: float
    problems: tuple[str, ...]  # the audio's own problems (clipping, silence)


def speech_facts(speech: Speech, fps: int, n_frames: int, av_window_s: float = AV_WINDOW_S) -> SpeechFacts:
    """The audio checks and the frame masks the frame checks need, from `speech` alone."""
    check_slot(speech, fps, n_frames)
    audio = np.asarray(speech.audio, dtype=np.float32)
    voiced = voiced_frames(speech, fps, n_frames)
    silent, peak_dbfs, clipped, problems = _audio_checks(audio, voiced)
    if silent:
        voiced[:] = False  # nothing to sync against, nothing "spoken" to freeze over
    return SpeechFacts(n_frames=n_frames, fps=int(fps), voiced=voiced,
                       speaking=bridge_gaps(voiced, int(round(SPEECH_GAP_BRIDGE_S * fps))),
                       av_window=_av_window(voiced, fps, av_window_s), peak_dbfs=peak_dbfs,
                       clipped_fraction=clipped, problems=tuple(problems))


def measure_window(window_frames: np.ndarray, speech: Speech, facts: SpeechFacts) -> AVOffset:
    """The lip-sync offset on the frames of `facts.av_window` (`window_frames`, in order)."""
    start, stop = facts.av_window
    if len(window_frames) != stop - start:
        raise StageInputError("frames", f"the lip-sync window is frames {start}–{stop}, got {len(window_frames)}")
    return measure_av_offset(window_frames, np.asarray(speech.audio, dtype=np.float32), speech.phonemes,
                             fps=facts.fps, sample_rate_hz=speech.sample_rate_hz, start_frame=start)


def make_verdict(facts: SpeechFacts, faces: np.ndarray, offset: AVOffset | None, still: np.ndarray,
                 black: np.ndarray, verify_s: float) -> Verdict:
    """The Verdict from the speech facts and what the frame checks found on every frame:
    `faces` per sampled frame (sampled_faces), the lip-sync `offset` (measure_window; None
    without a window), the still_frames and black_frame_mask masks over the whole slot."""
    problems: list[str] = []
    face_ratio = float(faces.mean())
    if face_ratio < MIN_FACE_RATIO:
        problems.append(f"face found on only {int(faces.sum())} of {len(faces)} sampled frames "
                        f"({face_ratio:.0%}; need ≥ {MIN_FACE_RATIO:.0%})")
    problems += _lipsync_problems(offset, facts.av_window)
    frozen_run, frozen_start, frozen_problems = _frozen_check(still, facts.fps)
    n_black, first_black, black_problems = _black_check(black)
    problems += frozen_problems + black_problems + list(facts.problems)
    return Verdict(
        passed=not problems, problems=tuple(problems), n_frames=facts.n_frames, fps=facts.fps,
        faces_checked=len(faces), face_ratio=round(face_ratio, 4), **_lipsync_fields(offset),
        av_window_frames=facts.av_window,
        longest_frozen_run_frames=frozen_run, frozen_run_start_frame=frozen_start,
        black_frames=n_black, first_black_frame=first_black,
        clipped_fraction=round(facts.clipped_fraction, 6),
        speech_active_fraction=round(float(facts.voiced.mean()), 4),
        audio_peak_dbfs=round(facts.peak_dbfs, 2) if facts.peak_dbfs is not None else None,
        verify_s=round(verify_s, 3),
    )
