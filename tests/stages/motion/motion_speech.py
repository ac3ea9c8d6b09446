"""Hand-built speech for the motion-planner tests: IPA timelines with plausible timings, and
synthetic audio (a glottal-like buzz shaped by formant resonances, murmurs and hiss) that follows them.

Built here rather than taken from the TTS stage so these tests depend on the planner alone.
"""

from __future__ import annotations

import numpy as np

from stages.types import SAMPLE_RATE_HZ, Phoneme

# IPA words as espeak-ng spells them (stress marks on the vowel, length marks after it).
SENTENCE = [
    ["h", "ə", "l", "ˈoʊ"], ["w", "ˈɜː", "l", "d"], ["ð", "ə"], ["k", "w", "ˈɪ", "k"],
    ["b", "ɹ", "ˈaʊ", "n"], ["f", "ˈɑː", "k", "s"], ["dʒ", "ˈʌ", "m", "p", "s"],
    ["ˌoʊ", "v", "ɚ"], ["ð", "ə"], ["l", "ˈeɪ", "z", "i"], ["d", "ˈɑː", "ɡ"],
    ["θ", "ˈæ", "ŋ", "k"], ["j", "uː"], ["v", "ˈɛ", "ɹ", "i"], ["m", "ˈʌ", "tʃ"],
    ["b", "ˈiː", "m"], ["p", "ˈuː", "l"], ["m", "aɪ"], ["ʃ", "ˈuː", "z"],
]
VOWEL_CHARS = set("aeiouæɑɒɔəɛɜɚɪʊʌᵻɐ")
VOICED = set("bdɡgvðzʒmnŋlɹwj") | {"dʒ"}


def is_vowel(symbol: str) -> bool:
    """Whether an IPA symbol (with stress/length marks) is a vowel or diphthong."""
    return any(ch in VOWEL_CHARS for ch in symbol)


def build_timeline(duration_s: float, seed: int = 0, sentence=SENTENCE) -> tuple[Phoneme, ...]:
    """Repeat SENTENCE until `duration_s`: vowels 90–170 ms, consonants 45–85 ms, word gaps 0–120 ms,
    a 400 ms pause after every 6 words."""
    rng = np.random.default_rng(seed)
    phonemes: list[Phoneme] = []
    t = 0.3
    word_index = 0
    while True:
        for word in sentence:
            for symbol in word:
                lo, hi = (0.09, 0.17) if is_vowel(symbol) else (0.045, 0.085)
                dur = float(rng.uniform(lo, hi))
                if t + dur > duration_s - 0.3:
                    return tuple(phonemes)
                phonemes.append(Phoneme(symbol, t, t + dur))
                t += dur
            word_index += 1
            t += 0.4 if word_index % 6 == 0 else float(rng.choice([0.0, 0.0, 0.06, 0.12]))


def _resonance(freqs_hz: np.ndarray, centre_hz: float, bandwidth_hz: float) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + ((freqs_hz - centre_hz) / (bandwidth_hz / 2.0)) ** 2)


def vowel_buzz(n_samples: int, f1_hz: float, f2_hz: float, f0_hz: float = 120.0,
               rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A periodic buzz whose harmonics are shaped by two formant resonances (unit peak)."""
    # Synthesise one period and tile it (f0 must divide the sample rate): cheap and exact.
    period = int(round(rate_hz / f0_hz))
    t = np.arange(period) / rate_hz
    harmonics = np.arange(1, int(5000 / f0_hz) + 1) * (rate_hz / period)
    gains = (_resonance(harmonics, f1_hz, 90.0) + _resonance(harmonics, f2_hz, 120.0)) / np.sqrt(
        np.arange(1, harmonics.size + 1))
    wave = np.sin(2 * np.pi * np.outer(t, harmonics)) @ gains
    return np.tile(wave / np.abs(wave).max(), n_samples // period + 1)[:n_samples]


# Textbook formants (F1, F2 in Hz) by a vowel's first letter; open vowels (high F1) are louder.
FORMANTS_HZ = {
    "a": (750, 1300), "ɑ": (750, 1100), "æ": (700, 1700), "ʌ": (640, 1200), "ɛ": (560, 1800),
    "e": (450, 2000), "ɪ": (400, 2000), "i": (300, 2300), "ʊ": (420, 1000), "u": (320, 850),
    "o": (480, 900), "ɔ": (570, 850), "ə": (500, 1450), "ɜ": (520, 1350), "ɚ": (500, 1350),
}


def _vowel_key(symbol: str) -> str:
    return next(ch for ch in symbol if ch in VOWEL_CHARS)


def synth_audio(phonemes, duration_s: float, seed: int = 0) -> np.ndarray:
    """Audio that follows a timeline: a formant buzz for vowels (louder the more open), a quiet low
    murmur for voiced consonants, soft hiss for voiceless ones, silence in gaps (5 ms ramps)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * SAMPLE_RATE_HZ))
    audio = np.zeros(n)
    buzzes = {key: vowel_buzz(n, *f) for key, f in FORMANTS_HZ.items()}
    murmur = np.sin(2 * np.pi * 120.0 * np.arange(n) / SAMPLE_RATE_HZ)
    hiss = rng.standard_normal(n)
    for ph in phonemes:
        lo, hi = int(ph.start_s * SAMPLE_RATE_HZ), min(n, int(ph.end_s * SAMPLE_RATE_HZ))
        core = ph.symbol.strip("ˈˌː")
        if is_vowel(ph.symbol):
            f1_hz = FORMANTS_HZ[_vowel_key(ph.symbol)][0]
            audio[lo:hi] = (0.12 + 0.3 * (f1_hz - 300) / 450) * buzzes[_vowel_key(ph.symbol)][lo:hi]
        elif core in VOICED:
            audio[lo:hi] = 0.05 * murmur[lo:hi]
        else:
            audio[lo:hi] = 0.02 * hiss[lo:hi]
    ramp = np.ones(int(0.005 * SAMPLE_RATE_HZ)) / int(0.005 * SAMPLE_RATE_HZ)
    return np.convolve(audio, ramp, mode="same").astype(np.float32)


def frame_coverage(spans, n_frames: int, fps: int) -> np.ndarray:
    """Per frame, the fraction of its display window [k/fps, (k+1)/fps) covered by `spans`."""
    fine_s = (np.arange(n_frames * 40) + 0.5) / (40 * fps)
    covered = np.zeros(fine_s.size, dtype=bool)
    for start_s, end_s in spans:
        covered |= (fine_s >= start_s) & (fine_s < end_s)
    return covered.reshape(n_frames, 40).mean(axis=1)


def mouth_sound_lag(mouth: np.ndarray, sound: np.ndarray, max_lag: int = 4) -> tuple[int, float, float]:
    """Cross-correlate per-frame `mouth` with `sound`: (best integer lag, sub-frame lag, peak corr).

    Lag L compares mouth[k + L] with sound[k], so L < 0 means the mouth moves before the sound.
    The sub-frame lag refines the peak with a parabola through its neighbours.
    """
    m = (mouth - mouth.mean()) / mouth.std()
    s = (sound - sound.mean()) / sound.std()
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array([np.mean(m[max(L, 0):m.size + min(L, 0)] * s[max(-L, 0):s.size - max(L, 0)])
                     for L in lags])
    i = int(np.argmax(corr))
    offset = float(lags[i])
    if 0 < i < lags.size - 1:
        left, mid, right = corr[i - 1], corr[i], corr[i + 1]
        offset += 0.5 * (left - right) / (left - 2 * mid + right)
    return int(lags[i]), offset, float(corr[i])
