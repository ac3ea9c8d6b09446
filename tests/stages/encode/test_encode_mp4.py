"""encode_mp4 / decode_mp4 / probe_mp4: exact length, exact audio-video alignment, faithful pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.encode import decode_mp4, encode_mp4, probe_mp4
from stages.errors import StageInputError

FPS = 24
RATE_HZ = 24_000
N_FRAMES = 1080
FLASH_FRAME = 240
CLICK_SAMPLE = 10 * RATE_HZ  # t = 10.000 s


def _moving_frames(n_frames: int) -> np.ndarray:
    """Dim frames with a bar sliding across (so no two neighbours are equal)."""
    frames = np.full((n_frames, 512, 512, 3), 40, dtype=np.uint8)
    columns = (np.arange(n_frames) * 3) % 480
    for offset in range(32):  # 32 column writes, vectorised over all frames
        frames[np.arange(n_frames), :, columns + offset, 1] = 150
    return frames


@pytest.fixture(scope="module")
def slot_mp4(tmp_path_factory) -> tuple[Path, object, np.ndarray]:
    """A 45 s, 1080-frame encode with a white flash at frame 240 and a click at 10.000 s."""
    frames = _moving_frames(N_FRAMES)
    frames[FLASH_FRAME] = 255
    # Slightly short speech: the encoder must pad it to the full 45 s.
    audio = np.zeros(45 * RATE_HZ - 3000, dtype=np.float32)
    audio[CLICK_SAMPLE] = 0.9
    path = tmp_path_factory.mktemp("enc") / "video.mp4"
    stats = encode_mp4(frames, audio, path, fps=FPS, sample_rate_hz=RATE_HZ)
    return path, stats, frames


@pytest.fixture(scope="module")
def decoded(slot_mp4):
    """The 45 s encode decoded back."""
    return decode_mp4(slot_mp4[0])


def test_probe_says_h264_aac_1080_frames_512px_24fps_45s(slot_mp4) -> None:
    """The file holds 1080 H.264 yuv420p frames of 512×512 at 24 fps lasting 45.0 s, and 24 kHz AAC of 45.0 s."""
    info = probe_mp4(slot_mp4[0])
    assert (info["video_codec"], info["audio_codec"], info["pix_fmt"]) == ("h264", "aac", "yuv420p")
    assert info["frames"] == N_FRAMES and (info["width"], info["height"]) == (512, 512)
    assert info["fps"] == pytest.approx(24.0)
    assert info["duration_s"] == pytest.approx(45.0, abs=1e-6)
    assert info["audio_duration_s"] == pytest.approx(45.0, abs=1e-6)
    assert info["audio_sample_rate_hz"] == RATE_HZ and info["audio_channels"] == 1


def test_index_is_at_the_front_and_aac_priming_is_skipped_by_the_edit_list(slot_mp4) -> None:
    """moov precedes mdat (faststart) and the audio edit list skips the AAC encoder's 1024 priming samples."""
    info = probe_mp4(slot_mp4[0])
    assert info["faststart"] is True
    assert info["audio_priming_samples"] == 1024
    assert info["video_start_s"] == 0.0 and info["audio_start_s"] == 0.0


def test_encode_stats_report_padding_and_throughput(slot_mp4) -> None:
    """EncodeStats counts the frames, the 45 s duration, the 3000 padded samples and the file size."""
    path, stats, _ = slot_mp4
    assert (stats.n_frames, stats.duration_s, stats.audio_samples) == (N_FRAMES, 45.0, 45 * RATE_HZ)
    assert (stats.audio_padded_samples, stats.audio_trimmed_samples) == (3000, 0)
    assert stats.file_bytes == path.stat().st_size and stats.frames_per_s > 0


def test_click_at_10s_decodes_within_2ms(decoded) -> None:
    """A click written at sample 240 000 is heard at 10.000 s ± 2 ms after decoding (priming hidden)."""
    assert decoded.sample_rate_hz == RATE_HZ
    assert len(decoded.audio) == 45 * RATE_HZ
    found = int(np.argmax(np.abs(decoded.audio)))
    assert abs(found - CLICK_SAMPLE) <= 0.002 * RATE_HZ, found - CLICK_SAMPLE


def test_flash_decodes_on_frame_240_and_pictures_survive(decoded, slot_mp4) -> None:
    """The white flash is the brightest decoded frame, exactly frame 240; other frames stay close to the source."""
    frames = slot_mp4[2]
    assert decoded.frames.shape == (N_FRAMES, 512, 512, 3) and decoded.fps == 24.0
    assert decoded.duration_s == 45.0
    brightness = decoded.frames[:, ::8, ::8].mean(axis=(1, 2, 3))
    assert int(np.argmax(brightness)) == FLASH_FRAME
    for i in (0, 100, 1079):
        assert np.abs(decoded.frames[i].astype(int) - frames[i]).mean() < 2.0


def test_colours_of_a_smooth_picture_round_trip(tmp_path: Path) -> None:
    """Saturated and skin-like colours come back within ~2 levels on average (BT.601 tags honoured)."""
    yy, xx = np.mgrid[0:512, 0:512]
    picture = np.stack([xx // 2, yy // 2, 255 - (xx + yy) // 4], axis=-1).astype(np.uint8)
    picture[:128, :128] = (224, 172, 150)
    frames = np.repeat(picture[None], 6, axis=0)
    encode_mp4(frames, np.zeros(RATE_HZ // 4, np.float32), tmp_path / "c.mp4", fps=FPS, sample_rate_hz=RATE_HZ)
    back = decode_mp4(tmp_path / "c.mp4").frames
    error = np.abs(back[3].astype(int) - picture)
    assert error.mean() < 2.0 and np.abs(back[3, :128, :128].mean(axis=(0, 1)) - (224, 172, 150)).max() < 2.0


def test_long_audio_is_trimmed_to_the_video(tmp_path: Path) -> None:
    """Audio longer than the 2 s of video is cut at 2.000 s; the last kept sample is still there."""
    audio = np.full(5 * RATE_HZ, 0.0, np.float32)
    audio[2 * RATE_HZ - 600] = 0.8  # 25 ms before the end: kept
    audio[3 * RATE_HZ] = 0.8  # after the end: dropped
    stats = encode_mp4(_moving_frames(48), audio, tmp_path / "t.mp4", fps=FPS, sample_rate_hz=RATE_HZ)
    assert stats.audio_trimmed_samples == 3 * RATE_HZ
    back = decode_mp4(tmp_path / "t.mp4")
    assert len(back.audio) == 2 * RATE_HZ and len(back.frames) == 48
    assert abs(int(np.argmax(np.abs(back.audio))) - (2 * RATE_HZ - 600)) <= 48


def test_decode_can_stop_early_and_fill_a_caller_buffer(slot_mp4) -> None:
    """max_frames / out return just the first frames, into the given buffer, with audio of the same span."""
    buffer = np.zeros((300, 512, 512, 3), np.uint8)
    part = decode_mp4(slot_mp4[0], out=buffer)
    assert part.frames.shape[0] == 300 and np.shares_memory(part.frames, buffer)
    assert len(part.audio) == 300 * RATE_HZ // FPS
    assert int(np.argmax(buffer[:, ::8, ::8].mean(axis=(1, 2, 3)))) == FLASH_FRAME
    first = decode_mp4(slot_mp4[0], max_frames=24)
    assert first.frames.shape[0] == 24 and len(first.audio) == RATE_HZ and first.duration_s == 1.0


@pytest.mark.parametrize(
    ("frames", "audio", "field"),
    [
        (np.zeros((4, 512, 512), np.uint8), np.zeros(4000, np.float32), "frames"),
        (np.zeros((4, 512, 512, 3), np.float32), np.zeros(4000, np.float32), "frames"),
        (np.zeros((4, 511, 512, 3), np.uint8), np.zeros(4000, np.float32), "frames"),
        (np.zeros((4, 64, 64, 3), np.uint8), np.zeros((2, 4000), np.float32), "speech.audio"),
        (np.zeros((4, 64, 64, 3), np.uint8), np.full(4000, np.nan, np.float32), "speech.audio"),
    ],
)
def test_bad_input_is_refused_naming_the_field(tmp_path: Path, frames, audio, field) -> None:
    """Wrong frame shapes/dtypes, odd sizes, stereo or NaN audio raise StageInputError naming the field; no file is left."""
    with pytest.raises(StageInputError) as caught:
        encode_mp4(frames, audio, tmp_path / "bad.mp4")
    assert caught.value.field == field
    assert not (tmp_path / "bad.mp4").exists()


def test_decoding_a_non_video_names_the_path(tmp_path: Path) -> None:
    """decode_mp4 and probe_mp4 on a text file or a missing file raise StageInputError for "path"."""
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    for call in (decode_mp4, probe_mp4):
        for path in (junk, tmp_path / "missing.mp4"):
            with pytest.raises(StageInputError) as caught:
                call(path)
            assert caught.value.field == "path"


def test_audio_starting_late_in_the_container_gets_leading_silence(tmp_path: Path) -> None:
    """An MP4 whose audio track starts 0.5 s after the video decodes with the first sound at sample 12 000."""
    import av

    path = tmp_path / "late.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = container.add_stream("aac", rate=RATE_HZ, layout="mono")
        for i in range(24):
            picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 9 * i, np.uint8), format="rgb24")
            picture.pts = i
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        block = np.zeros((1, 1024), np.float32)
        for k in range(12):
            block[0, :] = 0.0
            if k == 0:
                block[0, 0] = 0.9  # click on the first sample of the track
            chunk = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = RATE_HZ, RATE_HZ // 2 + 1024 * k
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    back = decode_mp4(path)
    assert abs(int(np.argmax(np.abs(back.audio))) - RATE_HZ // 2) <= 0.002 * RATE_HZ
    # Before the track starts (minus one AAC window of pre-echo around the click) there is silence.
    assert len(back.audio) >= RATE_HZ and np.abs(back.audio[: RATE_HZ // 2 - 2048]).max() == 0.0
