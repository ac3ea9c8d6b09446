"""A whole 45 s slot on the embedded backends: file format, manifest, and lip sync measured on the MP4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.encode import decode_mp4, encode_mp4, probe_mp4
from stages.types import Phoneme
from stages.verify.lipsync import best_lag, envelope_reference, mouth_aperture, phoneme_reference
from vortexd.recipe import load_recipe
from vortexd.render import render_slot
from vortexd.settings import Settings

pytestmark = pytest.mark.slow

FPS = 24
CONTROL_SHIFT_FRAMES = 3


@pytest.fixture(scope="module")
def demo_slot(tmp_path_factory, repo_root: Path):
    """The README demo recipe rendered once into a temporary output folder."""
    out = tmp_path_factory.mktemp("out")
    recipe = load_recipe(repo_root / "examples" / "demo.toml")
    result = render_slot(recipe, Settings(output_dir=out), out)
    return recipe, result


@pytest.fixture(scope="module")
def decoded(demo_slot):
    """The demo slot's MP4 decoded back to frames and audio."""
    return decode_mp4(demo_slot[1].slot_dir / "video.mp4")


@pytest.fixture(scope="module")
def demo_phonemes(demo_slot):
    """The espeak phoneme timeline of the demo script (espeak is deterministic)."""
    from stages.tts import EspeakBackend

    speech = demo_slot[0].speech
    return EspeakBackend().synthesize(speech.text, voice=speech.voice, rate_wpm=speech.rate_wpm).phonemes


def test_demo_slot_is_a_45s_24fps_512px_h264_aac_mp4(demo_slot) -> None:
    """The published video has exactly 1080 H.264 frames of 512×512 at 24 fps, 45.0 s, with AAC audio."""
    info = probe_mp4(demo_slot[1].slot_dir / "video.mp4")
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["frames"] == 1080 and (info["width"], info["height"]) == (512, 512)
    assert info["fps"] == pytest.approx(24.0)
    assert info["duration_s"] == pytest.approx(45.0, abs=0.05)


def test_manifest_records_recipe_seed_backends_timings_verdict_and_hashes(demo_slot) -> None:
    """manifest.json holds the recipe hash, seed, backends, per-stage seconds, verdict and file hashes."""
    recipe, result = demo_slot
    manifest = json.loads((result.slot_dir / "manifest.json").read_text())
    assert manifest["recipe_sha256"] == recipe.content_hash() and manifest["seed"] == 7
    assert manifest["backends"]["warp"] == "mesh" and manifest["backends"]["tts"] == "espeak"
    assert set(manifest["stage_seconds"]) >= {"image", "warp_prepare", "tts", "motion", "warp", "verify", "encode"}
    assert manifest["verdict"]["passed"], manifest["verdict"]
    import hashlib
    video_hash = hashlib.sha256((result.slot_dir / "video.mp4").read_bytes()).hexdigest()
    assert manifest["files"]["video.mp4"]["sha256"] == video_hash
    assert sorted(p.name for p in result.slot_dir.parent.iterdir()) == [recipe.slot_id]


def test_lip_sync_on_encoded_frames_is_within_one_frame(decoded, demo_phonemes) -> None:
    """Mouth aperture measured on the decoded MP4 lags neither the phonemes nor the audio by more than 1 frame."""
    aperture = mouth_aperture(decoded.frames)
    n = len(aperture)
    vs_phonemes = best_lag(aperture, phoneme_reference(demo_phonemes, FPS, n))
    vs_audio = best_lag(aperture, envelope_reference(decoded.audio, decoded.sample_rate_hz, FPS, n))
    assert abs(vs_phonemes.lag_frames) <= 1, vs_phonemes
    assert abs(vs_audio.lag_frames) <= 1, vs_audio
    assert vs_phonemes.correlation > 0.5 and vs_audio.correlation > 0.4


def test_judge_reports_a_three_frame_audio_shift_as_three(decoded, demo_phonemes, tmp_path: Path) -> None:
    """Control: delaying the audio (and the timeline) by 3 frames is measured as a 3-frame lag."""
    shift_s = CONTROL_SHIFT_FRAMES / FPS
    delay = int(round(shift_s * decoded.sample_rate_hz))
    delayed_audio = np.concatenate([np.zeros(delay, np.float32), decoded.audio[:-delay]])
    encode_mp4(decoded.frames, delayed_audio, tmp_path / "shifted.mp4", fps=FPS,
               sample_rate_hz=decoded.sample_rate_hz)
    shifted = decode_mp4(tmp_path / "shifted.mp4")
    aperture = mouth_aperture(shifted.frames)
    n = len(aperture)
    vs_audio = best_lag(aperture, envelope_reference(shifted.audio, shifted.sample_rate_hz, FPS, n))
    late_phonemes = [Phoneme(p.symbol, p.start_s + shift_s, p.end_s + shift_s) for p in demo_phonemes]
    vs_phonemes = best_lag(aperture, phoneme_reference(late_phonemes, FPS, n))
    in_sync = best_lag(mouth_aperture(decoded.frames), phoneme_reference(demo_phonemes, FPS, n))
    # The mouth now moves 3 frames BEFORE the sound: lag −3 in best_lag's sign convention. Against
    # the phoneme timeline the judge sees the planner's deliberate lead (~0.6 frame) on top, so the
    # shift is what it must recover exactly.
    assert vs_audio.lag_frames == -CONTROL_SHIFT_FRAMES, vs_audio
    assert vs_phonemes.lag_frames - in_sync.lag_frames == -CONTROL_SHIFT_FRAMES, (vs_phonemes, in_sync)


def test_short_nasal_utterance_is_not_a_false_lipsync_alarm(tmp_path: Path) -> None:
    """"Hello from the daemon." (2 s): the envelope peaks off-lag on the nasals, the better-fitting phonemes
    show sync, and the verdict passes while still reporting both lags."""
    from vortexd.recipe import parse_recipe

    recipe = parse_recipe({"slot_id": "short", "speech": {"text": "Hello from the daemon."},
                           "output": {"duration_s": 2}}, tmp_path)
    verdict = render_slot(recipe, Settings(output_dir=tmp_path / "o"), tmp_path / "o").manifest["verdict"]
    assert abs(verdict["av_lag_phonemes_frames"]) <= 1
    assert verdict["av_correlation_phonemes"] > verdict["av_correlation_envelope"]
    assert verdict["passed"], verdict["problems"]


def test_a_slot_rendered_again_gives_the_same_segment_bytes(tmp_path: Path) -> None:
    """Renders are deterministic down to the stream: the same recipe rendered twice (as after a
    crash) gives byte-identical segments, playlist and video.mp4, so a re-rendered slot airs the
    same bytes."""
    from vortexd.recipe import parse_recipe

    recipe = parse_recipe({"slot_id": "again", "speech": {"text": "Once more, exactly the same."},
                           "motion": {"seed": 3}, "output": {"duration_s": 5}}, tmp_path)
    files = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        manifest = render_slot(recipe, Settings(output_dir=out, verify=False), out).manifest
        files.append({name: entry["sha256"] for name, entry in manifest["files"].items() if name != "manifest.json"})
        assert [s["name"] for s in manifest["segments"]] == ["seg_00000.m4s", "seg_00001.m4s", "seg_00002.m4s"]
    assert files[0] == files[1] and "hls/seg_00001.m4s" in files[0] and "video.mp4" in files[0]
