"""The espeak backend: real speech, an accurate IPA phoneme timeline, and clear input errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.tts import EspeakBackend
from stages.types import SAMPLE_RATE_HZ

SENTENCE = "The quick brown fox jumps over the lazy dog."
BILABIAL_TEXT = (
    "Bob may bring a big map to the pub. Maybe Pam paid for the bumpy bus. "
    "My puppy bit a baby bat by the pool."
)
# Characters espeak's ASCII (Kirshenbaum) phoneme names use and IPA names never do.
_ASCII_PHONEME_CODES = set("@3:&_0123456789!#")


@pytest.fixture(scope="module")
def backend() -> EspeakBackend:
    return EspeakBackend()


def _rms(audio: np.ndarray, start_s: float, end_s: float) -> float:
    lo = max(int(round(start_s * SAMPLE_RATE_HZ)), 0)
    hi = max(int(round(end_s * SAMPLE_RATE_HZ)), lo + 1)
    return float(np.sqrt(np.mean(np.square(audio[lo:hi], dtype=np.float64))))


def _bare(symbol: str) -> str:
    return symbol.strip("ˈˌː")


def test_audio_is_24khz_float32_nonsilent_speech(backend):
    """synthesize returns 24 kHz mono float32 audio in [-1, 1] that is clearly not silence."""
    speech = backend.synthesize(SENTENCE)
    assert speech.sample_rate_hz == SAMPLE_RATE_HZ == 24_000
    assert speech.audio.dtype == np.float32 and speech.audio.ndim == 1
    assert np.all(np.abs(speech.audio) <= 1.0)
    assert np.sqrt(np.mean(speech.audio.astype(np.float64) ** 2)) > 0.02
    assert 1.5 < speech.duration_s < 5.0
    assert speech.backend == "espeak" and speech.voice == "en-us"


def test_duration_grows_with_text_length(backend):
    """Three sentences take roughly three times as long as one."""
    one = backend.synthesize(SENTENCE).duration_s
    three = backend.synthesize(" ".join([SENTENCE] * 3)).duration_s
    assert 2.4 < three / one < 3.6


def test_faster_rate_gives_shorter_audio(backend):
    """Doubling rate_wpm shortens the speech by at least a third."""
    slow = backend.synthesize(SENTENCE, rate_wpm=165).duration_s
    fast = backend.synthesize(SENTENCE, rate_wpm=330).duration_s
    assert fast < 0.67 * slow


def test_hello_world_phonemes_in_ipa(backend):
    """'Hello world' is transcribed h ə l ˈoʊ w ˈɜː l d, starting near the audio start."""
    speech = backend.synthesize("Hello world")
    assert [p.symbol for p in speech.phonemes] == ["h", "ə", "l", "ˈoʊ", "w", "ˈɜː", "l", "d"]
    assert speech.phonemes[0].start_s < 0.05


def test_timeline_is_monotonic_inside_the_audio_and_ipa(backend):
    """Phoneme spans are non-empty, ordered, non-overlapping, inside the audio, and IPA symbols."""
    speech = backend.synthesize(BILABIAL_TEXT)
    starts = np.array([p.start_s for p in speech.phonemes])
    ends = np.array([p.end_s for p in speech.phonemes])
    assert len(speech.phonemes) > 50
    assert np.all(ends > starts)
    assert np.all(starts[1:] >= ends[:-1])
    assert starts[0] >= 0.0 and ends[-1] <= speech.duration_s
    symbols = [p.symbol for p in speech.phonemes]
    assert all(s and not (set(s) & _ASCII_PHONEME_CODES) for s in symbols)
    assert any(ch in "".join(symbols) for ch in "əɪʊæɑˈ")


def test_sentence_pauses_stay_gaps(backend):
    """The pause between two sentences is a gap of over 100 ms, not stretched into a phoneme."""
    speech = backend.synthesize("Hello world. Goodbye now.")
    gaps = [b.start_s - a.end_s for a, b in zip(speech.phonemes, speech.phonemes[1:])]
    assert max(gaps) > 0.1
    assert all(p.end_s - p.start_s < 0.4 for p in speech.phonemes)


def test_bilabial_closures_are_quieter_than_vowel_midpoints(backend):
    """Audio is ~3× quieter in p/b/m closures than mid-vowel, and the contrast fades if the timeline is shifted 60 ms."""
    speech = backend.synthesize(BILABIAL_TEXT)
    bilabials = [p for p in speech.phonemes if _bare(p.symbol) in ("p", "b", "m")]
    vowels = [p for p in speech.phonemes if _bare(p.symbol)[:1] in set("aeiouæɑɒɔəɛɜɪʊʌɐ")]
    assert len(bilabials) > 15 and len(vowels) > 15

    def contrast(shift_s: float) -> float:
        closure = np.mean([_rms(speech.audio, p.start_s + shift_s, p.start_s + shift_s + 0.6 * (p.end_s - p.start_s)) for p in bilabials])
        middle = np.mean([_rms(speech.audio, p.start_s + shift_s + 0.25 * (p.end_s - p.start_s), p.end_s + shift_s - 0.25 * (p.end_s - p.start_s)) for p in vowels])
        return middle / closure

    aligned = contrast(0.0)
    assert aligned > 3.0
    assert contrast(+0.06) < 0.6 * aligned and contrast(-0.06) < 0.6 * aligned


def test_higher_pitch_raises_fundamental(backend):
    """pitch=90 speaks at a clearly higher fundamental frequency than pitch=20."""

    def f0_hz(pitch: int) -> float:
        # Cepstral pitch over 100 ms in the middle of the longest vowel.
        speech = backend.synthesize("Ah, law.", pitch=pitch)
        vowel = max(speech.phonemes, key=lambda p: p.end_s - p.start_s)
        middle = int((vowel.start_s + vowel.end_s) / 2 * SAMPLE_RATE_HZ)
        half = SAMPLE_RATE_HZ // 20
        x = speech.audio[middle - half : middle + half].astype(np.float64)
        x = (x - x.mean()) * np.hanning(len(x))
        cepstrum = np.fft.irfft(np.log(np.abs(np.fft.rfft(x, 8192)) + 1e-9))
        quefrencies = np.arange(SAMPLE_RATE_HZ // 400, SAMPLE_RATE_HZ // 50)  # 50..400 Hz
        return SAMPLE_RATE_HZ / quefrencies[np.argmax(cepstrum[quefrencies])]

    low, high = f0_hz(20), f0_hz(90)
    assert 50 < low < 120 and high > 1.5 * low


def test_synthesis_is_deterministic(backend):
    """The same text, voice and rate give bit-identical audio and timeline."""
    a = backend.synthesize(SENTENCE, rate_wpm=200)
    b = backend.synthesize(SENTENCE, rate_wpm=200)
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes


def test_breathy_voice_is_deterministic_across_seconds(backend):
    """en-us+f3 (breath noise from espeak's time-seeded generator) gives identical audio calls >1 s apart."""
    first = backend.synthesize("One two three four five.", voice="en-us+f3")
    time.sleep(1.1)  # espeak seeds its generator from time(NULL): cross a second boundary
    second = backend.synthesize("One two three four five.", voice="en-us+f3")
    assert np.array_equal(first.audio, second.audio)


def test_concurrent_calls_match_sequential_ones(backend):
    """Synthesis from several threads at once gives the same results as one at a time."""
    texts = [SENTENCE, BILABIAL_TEXT, "Hello world", "One two three four five."]
    expected = [backend.synthesize(t, voice=v) for t, v in zip(texts, ["en-us", "en-gb", "de", "en-us+f3"])]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = backend.synthesize(texts[i], voice=["en-us", "en-gb", "de", "en-us+f3"][i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, want in enumerate(expected):
        assert np.array_equal(results[i].audio, want.audio) and results[i].phonemes == want.phonemes


def test_voice_names_accept_prefix_case_and_variants(backend):
    """'espeak:EN-US+f3' is accepted, canonicalised to 'en-us+f3', and sounds different from plain en-us."""
    plain = backend.synthesize("Hello there", voice="en-us")
    variant = backend.synthesize("Hello there", voice="espeak:EN-US+f3")
    assert variant.voice == "en-us+f3"
    assert backend.synthesize("Hello there", voice="espeak:en-us").voice == "en-us"
    assert len(plain.audio) != len(variant.audio) or not np.array_equal(plain.audio, variant.audio)


def test_voices_lists_common_languages(backend):
    """voices() lists espeak language codes such as en-us, en-gb, de and fr-fr, sorted and unique."""
    voices = backend.voices()
    assert {"en-us", "en-gb", "en", "de", "fr-fr"} <= set(voices)
    assert voices == sorted(set(voices))
    assert {"f3", "m2"} <= set(backend.variants())


def test_every_listed_voice_speaks(backend):
    """Every voice voices() advertises produces audio and phonemes (none lacks its dictionary)."""
    for voice in backend.voices():
        speech = backend.synthesize("hello, one two three", voice=voice)
        assert len(speech.phonemes) >= 3 and speech.duration_s > 0.3, voice


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_rejected(backend, text):
    """Empty or whitespace-only text fails on field speech.text."""
    with pytest.raises(StageInputError) as err:
        backend.synthesize(text)
    assert err.value.field == "speech.text"


def test_unspeakable_text_is_rejected(backend):
    """Text with nothing to pronounce (only punctuation) fails on speech.text instead of giving silence."""
    with pytest.raises(StageInputError) as err:
        backend.synthesize("...")
    assert err.value.field == "speech.text"


def test_unknown_voice_lists_valid_voices(backend):
    """An unknown voice fails on speech.voice, suggests valid ones, and carries them all in details."""
    with pytest.raises(StageInputError) as err:
        backend.synthesize("Hello", voice="en-usa")
    assert err.value.field == "speech.voice"
    assert "en-us" in err.value.message and "en-gb" in err.value.message
    assert err.value.details["valid"] == backend.voices()


def test_unknown_variant_is_rejected(backend):
    """A voice with an unknown '+variant' fails on speech.voice (espeak would silently ignore it)."""
    with pytest.raises(StageInputError) as err:
        backend.synthesize("Hello", voice="en-us+nosuchvariant")
    assert err.value.field == "speech.voice"
    assert "f3" in err.value.details["valid_variants"]


@pytest.mark.parametrize("rate", [79, 451, 0, -165])
def test_rate_outside_range_is_rejected(backend, rate):
    """rate_wpm outside 80..450 fails on speech.rate_wpm."""
    with pytest.raises(StageInputError) as err:
        backend.synthesize("Hello", rate_wpm=rate)
    assert err.value.field == "speech.rate_wpm"


@pytest.mark.parametrize("rate", [80, 450])
def test_rate_range_is_inclusive(backend, rate):
    """The ends of the rate range, 80 and 450 wpm, are accepted."""
    assert backend.synthesize("Hello", rate_wpm=rate).duration_s > 0


def test_pitch_outside_range_is_rejected(backend):
    """pitch outside 0..100 fails on speech.pitch."""
    with pytest.raises(StageInputError) as err:
        backend.synthesize("Hello", pitch=101)
    assert err.value.field == "speech.pitch"
