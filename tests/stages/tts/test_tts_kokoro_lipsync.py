"""Kokoro speech through the whole picture path passes the same lip-sync judge as the espeak slots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stages.encode import decode_mp4, encode_mp4
from stages.fit import fit_speech
from stages.image import load_actor
from stages.motion import plan_motion
from stages.tts.kokoro import KokoroBackend
from stages.verify.lipsync import best_lag, envelope_reference, mouth_aperture, phoneme_reference
from stages.warp.mesh import MeshWarpBackend

pytestmark = pytest.mark.slow

FPS = 24
SCRIPT = ("Every morning, the market opens at seven. People bring bread, fish, and flowers from the "
          "villages nearby. My father used to say that patience is a quiet kind of courage.")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """SCRIPT spoken by Kokoro, planned, mesh-warped on the sample portrait, encoded to MP4 and decoded."""
    with KokoroBackend(cache_dir=tmp_path_factory.getbasetemp() / "kokoro-cache", workers=2) as kokoro:
        raw = kokoro.synthesize(SCRIPT, voice="kokoro:jf_alpha")
    duration_s = float(math.ceil(raw.duration_s))
    speech = fit_speech(raw, duration_s)
    n_frames = int(duration_s * FPS)
    plan = plan_motion(speech, "neutral", seed=5, n_frames=n_frames, fps=FPS)
    frames = np.zeros((n_frames, 512, 512, 3), dtype=np.uint8)
    MeshWarpBackend().prepare(load_actor()).render(plan, slice(0, n_frames), frames)
    path = Path(tmp_path_factory.mktemp("kokoro-lipsync")) / "slot.mp4"
    encode_mp4(frames, speech.audio, path, fps=FPS, sample_rate_hz=speech.sample_rate_hz)
    return speech, decode_mp4(path)


def test_mouth_on_encoded_frames_is_within_one_frame_of_kokoro_speech(rendered) -> None:
    """Mouth aperture on the decoded MP4 lags neither Kokoro's phonemes nor its audio by more than one frame."""
    speech, decoded = rendered
    aperture = mouth_aperture(decoded.frames)
    n = len(aperture)
    vs_phonemes = best_lag(aperture, phoneme_reference(speech.phonemes, FPS, n))
    vs_audio = best_lag(aperture, envelope_reference(decoded.audio, decoded.sample_rate_hz, FPS, n))
    assert abs(vs_phonemes.lag_frames) <= 1, vs_phonemes
    assert abs(vs_audio.lag_frames) <= 1, vs_audio
    assert abs(vs_audio.lag_refined_frames) < 1.0, vs_audio
    assert vs_phonemes.correlation > 0.5 and vs_audio.correlation > 0.3
