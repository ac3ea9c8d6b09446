"""verify_slot: a good talking slot passes; black, frozen, faceless, out-of-sync, clipped, silent ones are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from verify_talking import FPS, open_mouth_frames, shifted

from stages.errors import StageInputError
from stages.types import Speech
from stages.verify import verify_slot
from stages.verify.checks import MAX_FROZEN_RUN_FRAMES, black_frame_mask, longest_true_run, still_frames


def test_in_sync_talking_portrait_passes(talk, in_sync_frames) -> None:
    """A real face whose mouth follows the speech passes every check, with lag 0 against audio and phonemes."""
    verdict = verify_slot(in_sync_frames, talk[0], FPS)
    assert verdict.passed, verdict.problems
    assert verdict.problems == () and verdict.face_ratio == 1.0 and verdict.faces_checked == 16
    assert verdict.av_lag_frames == 0 and verdict.av_reference == "envelope" and verdict.av_correlation > 0.5
    assert verdict.av_lag_phonemes_frames == 0 and verdict.av_correlation_phonemes > 0.5
    assert verdict.av_window_frames == (0, len(in_sync_frames))
    assert verdict.black_frames == 0 and verdict.longest_frozen_run_frames <= MAX_FROZEN_RUN_FRAMES
    assert 0.3 < verdict.speech_active_fraction < 0.9
    json.dumps(verdict.as_dict(), allow_nan=False)  # manifest-ready: strict JSON


def test_black_video_is_flagged(talk) -> None:
    """All-black frames fail with a black-frame problem and a missing-face problem."""
    frames = np.zeros((96, 512, 512, 3), np.uint8)
    verdict = verify_slot(frames, talk[0], FPS)
    assert not verdict.passed and verdict.black_frames == 96 and verdict.first_black_frame == 0
    assert any("96 black frames" in p for p in verdict.problems)
    assert any("face found on only 0 of 8" in p for p in verdict.problems)


def test_a_single_black_frame_is_flagged(talk, in_sync_frames) -> None:
    """One black frame in the middle of a good slot is reported with its index."""
    frames = in_sync_frames.copy()
    frames[100] = 0
    verdict = verify_slot(frames, talk[0], FPS)
    assert not verdict.passed and verdict.problems == ("1 black frame (first at frame 100)",)


def test_frozen_video_is_flagged(portrait, talk) -> None:
    """A still portrait while the voice goes on fails as frozen (the face itself is found)."""
    frames = np.repeat(portrait.image[None], 96, axis=0)
    verdict = verify_slot(frames, talk[0], FPS)
    assert not verdict.passed and verdict.face_ratio == 1.0
    assert verdict.longest_frozen_run_frames > MAX_FROZEN_RUN_FRAMES
    assert any("frozen" in p for p in verdict.problems)
    # The still mouth cannot follow the speech either.
    assert any("mouth" in p or "lip-sync" in p for p in verdict.problems)


def test_missing_faces_are_flagged(talk, in_sync_frames) -> None:
    """When half the frames show no face the face check fails with the sampled count."""
    frames = in_sync_frames.copy()
    yy, xx = np.mgrid[0:512, 0:512]
    landscape = np.stack([xx // 2, 128 + yy // 4, 255 - yy // 2], axis=-1).astype(np.uint8)
    frames[96:] = landscape
    frames[96::2, :, :, 0] += 1  # keep the picture changing, so only the face check fires there
    verdict = verify_slot(frames, talk[0], FPS)
    assert not verdict.passed and verdict.face_ratio == 0.5
    assert any("face found on only 8 of 16 sampled frames (50%" in p for p in verdict.problems)


def test_mouth_four_frames_late_is_flagged(portrait, talk) -> None:
    """A mouth moving 4 frames after the sound fails the ±2 frame lip-sync bound, measured as +4."""
    frames = open_mouth_frames(portrait, shifted(talk[1], 4))
    verdict = verify_slot(frames, talk[0], FPS)
    assert not verdict.passed and verdict.av_lag_frames == 4
    assert verdict.problems == (
        "lip-sync offset against the audio +4 frames (+167 ms, video late) exceeds ±2 frames",
        "lip-sync offset against the phonemes +4 frames (+167 ms, video late) exceeds ±2 frames",
    )


def test_clipped_and_silent_audio_are_flagged(talk, in_sync_frames) -> None:
    """Audio driven into ±1 is reported as clipping; an all-zero track as silent."""
    speech = talk[0]
    loud = Speech(np.clip(speech.audio * 8, -1, 1), speech.phonemes, speech.voice, speech.backend)
    verdict = verify_slot(in_sync_frames, loud, FPS)
    assert verdict.clipped_fraction > 0.01 and any("clips" in p for p in verdict.problems)
    silent = Speech(np.zeros_like(speech.audio), speech.phonemes, speech.voice, speech.backend)
    verdict = verify_slot(in_sync_frames[:48], silent, FPS)
    assert any("silent (digital silence)" in p for p in verdict.problems) and verdict.av_lag_frames is None


def test_still_frames_tolerates_one_level_of_noise_and_respects_the_mask() -> None:
    """Frames differing by ≤ 1 anywhere count as still; a 2-level change in one pixel does not; masked frames are skipped."""
    frames = np.full((10, 32, 32, 3), 100, np.uint8)
    frames[3, 5, 5, 1] = 101  # noise: still
    frames[6, 17, 9, 2] = 102  # a real (tiny) change on a row the coarse pass skips
    consider = np.ones(10, bool)
    consider[8] = False
    still = still_frames(frames, consider)
    assert still.tolist() == [False, True, True, True, True, True, False, False, False, True]
    assert longest_true_run(still) == (5, 1) and longest_true_run(np.zeros(3, bool)) == (0, None)


def test_black_frame_mask_spares_dark_but_real_pictures() -> None:
    """Pure black is black; a dark portrait-like frame with a lit face is not."""
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[1, 16:48, 16:48] = 120  # a lit face on black: mean 30
    assert black_frame_mask(frames).tolist() == [True, False]


def test_bad_input_is_refused(talk) -> None:
    """Float frames, an empty slab or a non-Speech raise StageInputError naming the field."""
    for frames, speech, field in ((np.zeros((4, 8, 8, 3), np.float32), talk[0], "frames"),
                                  (np.zeros((0, 8, 8, 3), np.uint8), talk[0], "frames"),
                                  (np.zeros((4, 8, 8, 3), np.uint8), np.zeros(10), "speech")):
        with pytest.raises(StageInputError) as caught:
            verify_slot(frames, speech, FPS)
        assert caught.value.field == field


def test_short_pauses_count_as_speaking_but_long_silences_do_not() -> None:
    """Gaps up to max_gap between voiced frames are bridged; leading, trailing and long gaps are not."""
    from stages.verify.checks import bridge_gaps

    mask = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0], bool)
    assert bridge_gaps(mask, 3).astype(int).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
