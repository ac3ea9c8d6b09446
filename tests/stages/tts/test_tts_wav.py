"""Loading a recipe's wav: any common format in, 24 kHz mono float32 Speech out, clear errors."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from scipy.io import wavfile

from stages.errors import StageInputError
from stages.tts import load_wav
from stages.tts.resample import resample_to_rate


def _peak_hz(audio: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1.0 / rate_hz)[np.argmax(spectrum)])


def test_stereo_44k1_int16_becomes_24k_mono(tmp_path):
    """A 2 s 44.1 kHz stereo int16 wav loads as 2 s of 24 kHz mono float32, channels averaged, pitch kept."""
    t = np.arange(88_200) / 44_100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = np.zeros_like(left)
    pcm = (np.stack([left, right], axis=1) * 32767).astype(np.int16)
    path = tmp_path / "voice.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44_100)
        out.writeframes(pcm.tobytes())

    speech = load_wav(path)
    assert speech.audio.dtype == np.float32 and speech.audio.ndim == 1
    assert speech.sample_rate_hz == 24_000 and len(speech.audio) == 48_000
    assert speech.phonemes == () and speech.backend == "wav"
    assert abs(_peak_hz(speech.audio, 24_000) - 440) < 2
    middle = speech.audio[1000:-1000]
    assert np.max(np.abs(middle)) == pytest.approx(0.25, abs=0.01)


def test_float_wav_at_24k_is_unchanged(tmp_path):
    """A 24 kHz mono float32 wav comes back sample for sample."""
    audio = np.random.default_rng(3).uniform(-0.9, 0.9, 24_000).astype(np.float32)
    path = tmp_path / "float.wav"
    wavfile.write(path, 24_000, audio)
    assert np.array_equal(load_wav(path).audio, audio)


def test_int32_wav_is_scaled_to_unit_range(tmp_path):
    """32-bit PCM at full scale loads with a peak of 1.0."""
    t = np.arange(16_000) / 16_000
    pcm = (np.sin(2 * np.pi * 200 * t) * (2**31 - 1)).astype(np.int32)
    path = tmp_path / "int32.wav"
    wavfile.write(path, 16_000, pcm)
    speech = load_wav(path)
    assert len(speech.audio) == 24_000
    assert np.max(np.abs(speech.audio)) == pytest.approx(1.0, abs=0.02)


def test_garbage_file_is_rejected(tmp_path):
    """A file that is not a wav fails on speech.audio."""
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not RIFF data at all" * 10)
    with pytest.raises(StageInputError) as err:
        load_wav(path)
    assert err.value.field == "speech.audio"


def test_missing_file_is_rejected(tmp_path):
    """A path with no file behind it fails on speech.audio."""
    with pytest.raises(StageInputError) as err:
        load_wav(tmp_path / "absent.wav")
    assert err.value.field == "speech.audio"


def test_empty_wav_is_rejected(tmp_path):
    """A valid wav with no samples fails on speech.audio."""
    path = tmp_path / "empty.wav"
    wavfile.write(path, 24_000, np.zeros(0, dtype=np.int16))
    with pytest.raises(StageInputError) as err:
        load_wav(path)
    assert err.value.field == "speech.audio"


def test_resampling_22050_to_24000_keeps_length_and_tone():
    """espeak's 22.05 kHz becomes 24 kHz with exact length ratio 160/147 and the same tone frequency."""
    t = np.arange(22_050) / 22_050
    tone = 0.8 * np.sin(2 * np.pi * 1000 * t)
    out = resample_to_rate(tone, 22_050, 24_000)
    assert out.dtype == np.float32 and len(out) == 24_000
    assert abs(_peak_hz(out, 24_000) - 1000) < 2


def test_a_wav_header_without_its_format_chunk_is_rejected(tmp_path):
    """RIFF/WAVE with no fmt chunk (scipy's parser once crashed on it) is a speech.audio error."""
    path = tmp_path / "fake.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    with pytest.raises(StageInputError) as err:
        load_wav(path)
    assert err.value.field == "speech.audio"
