"""The Kokoro backend on the real int8 model: exact durations, a timeline that covers the audio, input errors."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.motion.visemes import VISEMES
from stages.tts.kokoro import KokoroBackend
from stages.tts.kokoro.timeline import SAMPLES_PER_FRAME
from stages.types import SAMPLE_RATE_HZ

TEXT = ("Doctor Smith opened the clinic in 1999. Every morning, patients waited; "
        "some brought bread. Was it easy? Not at all!")
WINDOW = SAMPLE_RATE_HZ // 100  # 10 ms


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> KokoroBackend:
    """One in-process backend (one model session) for the module, on the session's Kokoro cache."""
    with KokoroBackend(cache_dir=tmp_path_factory.getbasetemp() / "kokoro-cache", workers=0) as kokoro:
        yield kokoro


@pytest.fixture(scope="module")
def calls(backend: KokoroBackend):
    """TEXT's model calls and their raw outputs (synthesised once for the module)."""
    return backend.synthesize_chunks(TEXT)


@pytest.fixture(scope="module")
def speech(backend: KokoroBackend, calls):
    """TEXT as a speech track, built from `calls`."""
    return backend.speech_from_chunks(*calls)


def _loud_windows(audio: np.ndarray, floor_db: float = -30.0) -> np.ndarray:
    n = len(audio) // WINDOW
    energy = np.square(audio[: n * WINDOW].astype(np.float64)).reshape(n, WINDOW).mean(axis=1)
    return np.flatnonzero(energy >= energy.max() * 10 ** (floor_db / 10))


def test_every_chunk_lasts_exactly_its_durations_times_600_samples(calls) -> None:
    """For every model call, sum(durations) × 600 equals the audio length; one count per token plus 2 pads."""
    chunks, raws = calls
    assert len(chunks) == 4  # one call per sentence
    for chunk, raw in zip(chunks, raws):
        assert len(raw.durations) == chunk.n_tokens + 2
        assert int(raw.durations.sum()) * SAMPLES_PER_FRAME == len(raw.audio)
        assert raw.durations.min() >= 1


def test_speech_is_24khz_float32_kokoro_audio(speech) -> None:
    """synthesize returns clearly audible float32 audio in [-1, 1] tagged backend "kokoro" and the voice used."""
    assert speech.backend == "kokoro" and speech.voice == "kokoro:jf_alpha"
    assert speech.audio.dtype == np.float32 and speech.sample_rate_hz == SAMPLE_RATE_HZ
    assert np.abs(speech.audio).max() <= 1.0 and float(np.sqrt(np.mean(speech.audio**2))) > 0.02
    assert 4.0 < speech.duration_s < 10.0


def test_timeline_is_monotonic_inside_the_audio_and_covers_every_loud_part(speech) -> None:
    """Spans are ordered, non-overlapping, inside the track; every loud 10 ms lies within 60 ms of a phoneme."""
    starts = np.array([p.start_s for p in speech.phonemes])
    ends = np.array([p.end_s for p in speech.phonemes])
    assert len(speech.phonemes) > 50
    assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1] - 1e-9)
    assert starts[0] >= 0 and ends[-1] <= speech.duration_s + 1e-9
    loud_s = (_loud_windows(speech.audio) + 0.5) * WINDOW / SAMPLE_RATE_HZ
    idx = np.clip(np.searchsorted(starts, loud_s, side="right") - 1, 0, len(starts) - 1)
    distance = np.maximum(0, np.maximum(starts[idx] - loud_s, loud_s - ends[idx]))
    nxt = np.clip(idx + 1, 0, len(starts) - 1)
    distance = np.minimum(distance, np.maximum(0, starts[nxt] - loud_s))
    assert distance.max() <= 0.06, f"loud audio {distance.max():.3f} s from any phoneme"
    assert abs(starts[0] - loud_s[0]) < 0.1 and abs(ends[-1] - loud_s[-1]) < 0.1


def test_sentences_are_separated_by_quiet_pauses(speech) -> None:
    """Between sentences there is at least 0.3 s with no phoneme, and the audio there is near silent."""
    starts = np.array([p.start_s for p in speech.phonemes])
    ends = np.array([p.end_s for p in speech.phonemes])
    gaps = starts[1:] - ends[:-1]
    big = np.flatnonzero(gaps >= 0.3)
    assert len(big) >= 3  # after "1999.", "bread." and "easy?"
    peak = np.abs(speech.audio).max()
    for i in big:
        middle = int((ends[i] + gaps[i] / 2) * SAMPLE_RATE_HZ)
        assert np.abs(speech.audio[middle - 1200 : middle + 1200]).max() < 0.01 * peak


def test_timeline_symbols_are_ipa_the_motion_planner_knows(speech) -> None:
    """Every symbol is espeak IPA (stress marks allowed) made of sounds in the planner's viseme table."""
    for phoneme in speech.phonemes:
        core = "".join(c for c in phoneme.symbol if c not in "ˈˌː" and not unicodedata.combining(c))
        i = 0
        while i < len(core):
            step = 2 if core[i:i + 2] in VISEMES else 1
            assert core[i:i + step] in VISEMES, f"{phoneme.symbol!r} has no viseme for {core[i:i + step]!r}"
            i += step
    symbols = {p.symbol.strip("ˈˌ") for p in speech.phonemes}
    assert {"aɪ", "ð", "ɹ"} <= symbols  # "1999" nineteen ninety-nine, "the", "bread"


def test_same_text_same_audio(backend: KokoroBackend) -> None:
    """Synthesis is deterministic: the same request twice gives identical samples and timeline."""
    first, second = backend.synthesize("Once more, exactly."), backend.synthesize("Once more, exactly.")
    assert np.array_equal(first.audio, second.audio) and first.phonemes == second.phonemes


def test_rate_wpm_sets_kokoro_speed(backend: KokoroBackend) -> None:
    """110 wpm speaks the same sentence about twice as long as 220 wpm (165 wpm is speed 1.0)."""
    text = "The river runs under the bridge."
    slow, fast = backend.synthesize(text, rate_wpm=110), backend.synthesize(text, rate_wpm=220)
    assert 1.6 < slow.duration_s / fast.duration_s < 2.4


def test_voices_are_listed_with_the_kokoro_prefix_and_resolved_with_or_without_it(backend: KokoroBackend) -> None:
    """voices() lists the five PyPI packs as "kokoro:<name>"; "jm_kumo" and "kokoro:jm_kumo" are the same voice."""
    assert backend.voices() == ["kokoro:jf_alpha", "kokoro:jf_gongitsune", "kokoro:jf_nezumi",
                                "kokoro:jf_tebukuro", "kokoro:jm_kumo"]
    assert backend.resolve_voice("jm_kumo") == backend.resolve_voice("kokoro:jm_kumo") == "jm_kumo"


def test_unknown_voice_is_refused_with_the_valid_voices(backend: KokoroBackend) -> None:
    """An unknown voice raises StageInputError("speech.voice") listing every voice and suggesting near ones."""
    with pytest.raises(StageInputError) as caught:
        backend.synthesize("Hello.", voice="kokoro:jf_alpah")
    assert caught.value.field == "speech.voice"
    assert "did you mean kokoro:jf_alpha" in caught.value.message
    assert caught.value.details["valid"] == backend.voices()
    assert all(v in caught.value.message for v in backend.voices())


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"text": ""}, "speech.text"),
    ({"text": "   \n "}, "speech.text"),
    ({"text": "?!… —"}, "speech.text"),
    ({"text": 42}, "speech.text"),
    ({"text": "Hi.", "rate_wpm": 40}, "speech.rate_wpm"),
    ({"text": "Hi.", "rate_wpm": "fast"}, "speech.rate_wpm"),
    ({"text": "Hi.", "pitch": 50}, "speech.pitch"),
])
def test_bad_requests_name_the_recipe_field(backend: KokoroBackend, kwargs: dict, field: str) -> None:
    """Empty or unspeakable text, an out-of-range rate and a pitch (Kokoro has none) raise StageInputError."""
    with pytest.raises(StageInputError) as caught:
        backend.synthesize(**kwargs)
    assert caught.value.field == field


@pytest.mark.slow
def test_worker_processes_give_the_same_speech_and_survive_a_killed_worker(speech, tmp_path_factory) -> None:
    """Two worker processes produce exactly the in-process result; after one is killed, the next call still works."""
    import os
    import signal

    with KokoroBackend(cache_dir=tmp_path_factory.getbasetemp() / "kokoro-cache", workers=2) as parallel:
        reference = speech
        result = parallel.synthesize(TEXT)
        assert np.array_equal(result.audio, reference.audio) and result.phonemes == reference.phonemes
        runner = parallel._get_runner()
        assert len(set(runner.pids)) == 2
        os.kill(runner.pids[0], signal.SIGKILL)
        again = parallel.synthesize(TEXT)
        assert np.array_equal(again.audio, reference.audio)
        assert len(set(runner.pids)) == 2


@pytest.mark.slow
def test_operator_folder_with_its_own_voices(tmp_path: Path, tmp_path_factory) -> None:
    """A configured folder (model + voices/*.npy) is used: its voices are listed, British ones get en-gb symbols."""
    from stages.tts.kokoro import assets

    cache = tmp_path_factory.getbasetemp() / "kokoro-cache"
    folder = tmp_path / "kokoro"
    (folder / "voices").mkdir(parents=True)
    (folder / "kokoro-v1.0.onnx").symlink_to(assets.packaged_model(cache))
    with np.load(assets.packaged_data_file("voices_ja.npz")) as packs:
        np.save(folder / "voices" / "af_local.npy", packs["jf_alpha"])
        np.save(folder / "voices" / "bm_local.npy", packs["jm_kumo"])
    with KokoroBackend(model_dir=folder, cache_dir=tmp_path / "cache", workers=0) as local:
        assert local.voices() == ["kokoro:af_local", "kokoro:bm_local"]
        chunks, raws = local.synthesize_chunks("Go home.", voice="kokoro:bm_local")
        assert "Q" in "".join(u.tokens for u in chunks[0].units)  # British əʊ
        assert int(raws[0].durations.sum()) * SAMPLES_PER_FRAME == len(raws[0].audio)
        assert local.synthesize("Go home.", voice="kokoro:af_local").phonemes


def test_voices_and_request_checks_need_no_model(tmp_path: Path) -> None:
    """Listing voices and refusing a bad voice work before any model is assembled (the cache stays empty)."""
    fresh = KokoroBackend(cache_dir=tmp_path / "cache", workers=0)
    assert "kokoro:jm_kumo" in fresh.voices()
    with pytest.raises(StageInputError):
        fresh.synthesize("Hello.", voice="kokoro:nobody")
    assert not (tmp_path / "cache").exists()
