"""StreamEncoder / remux_mp4: HLS fMP4 segments written while frames arrive, and video.mp4 from the same packets."""

from __future__ import annotations

import hashlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from stages.encode import decode_mp4, probe_mp4
from stages.encode.stream import Segment, StreamEncoder, StreamResult, remux_mp4
from stages.errors import StageInputError

FPS = 24
RATE_HZ = 24_000
N_FRAMES = 108  # 4.5 s: segments of 2.0, 2.0 and 0.5 s
CHUNK = 48
SIDE = 128
CLICKS_S = (1.0, 3.9)  # one mid-segment, one 100 ms before the last segment starts


def _moving_frames(n_frames: int, side: int = SIDE) -> np.ndarray:
    """Dim frames with a green bar sliding across and a frame-number ramp (no two frames equal)."""
    frames = np.full((n_frames, side, side, 3), 40, dtype=np.uint8)
    for i in range(n_frames):
        column = (i * 3) % (side - 20)
        frames[i, :, column : column + 20, 1] = 170
        frames[i, : side // 4, : side // 4, 0] = (i * 7) % 200 + 30
    return frames


def _tone_with_clicks(n_samples: int, rate_hz: int, clicks_s: tuple[float, ...]) -> np.ndarray:
    """A quiet 440 Hz tone with loud one-sample clicks at `clicks_s`."""
    audio = (0.1 * np.sin(2 * np.pi * 440 * np.arange(n_samples) / rate_hz)).astype(np.float32)
    for t_s in clicks_s:
        audio[int(round(t_s * rate_hz))] = 0.95
    return audio


@dataclass
class Observed:
    """One streamed encode: what each add_frames returned and what the folder held after it."""

    folder: Path
    frames: np.ndarray
    audio: np.ndarray
    returned: list[list[Segment]]
    listings: list[set[str]]
    playlists: list[str]
    bytes_seen: list[dict[str, bytes]]
    result: StreamResult


def _stream(folder: Path, frames: np.ndarray, audio: np.ndarray, chunk: int = CHUNK, **kwargs) -> Observed:
    """Feed `frames` in chunks, recording the folder after each call, then close."""
    encoder = StreamEncoder(folder, FPS, len(frames), audio, RATE_HZ, **kwargs)
    returned, listings, playlists, seen = [], [], [], []
    for start in range(0, len(frames), chunk):
        returned.append(encoder.add_frames(frames[start : start + chunk], start))
        listings.append({path.name for path in folder.iterdir()})
        playlist = folder / "index.m3u8"
        playlists.append(playlist.read_text() if playlist.exists() else "")
        seen.append({path.name: path.read_bytes() for path in folder.glob("seg_*.m4s")})
    return Observed(folder, frames, audio, returned, listings, playlists, seen, encoder.close())


@pytest.fixture(scope="module")
def streamed(tmp_path_factory) -> Observed:
    """108 frames of 128² with a tone and two clicks, streamed in 48-frame chunks, plus its video.mp4."""
    root = tmp_path_factory.mktemp("stream")
    frames = _moving_frames(N_FRAMES)
    audio = _tone_with_clicks(N_FRAMES * RATE_HZ // FPS, RATE_HZ, CLICKS_S)
    observed = _stream(root / "hls", frames, audio)
    remux_mp4(root / "hls", root / "video.mp4")
    return observed


def _extinf(playlist: str) -> list[tuple[float, str]]:
    """(duration, uri) of each segment a playlist lists."""
    return [(float(d), uri) for d, uri in re.findall(r"#EXTINF:([0-9.]+),\n(\S+)", playlist)]


def test_segments_are_at_most_2s_and_add_up_to_the_slot(streamed) -> None:
    """Segments last 2.0, 2.0 and 0.5 s (playlist and result agree), summing to 4.5 s; the playlist is complete."""
    result = streamed.result
    assert [(s.name, s.start_frame, s.n_frames) for s in result.segments] == [
        ("seg_00000.m4s", 0, 48), ("seg_00001.m4s", 48, 48), ("seg_00002.m4s", 96, 12)]
    playlist = result.playlist.read_text()
    listed = _extinf(playlist)
    assert [uri for _, uri in listed] == [s.name for s in result.segments]
    assert [d for d, _ in listed] == pytest.approx([2.0, 2.0, 0.5], abs=1e-6)
    assert all(s.duration_s <= 2.0 for s in result.segments)
    assert sum(s.duration_s for s in result.segments) == pytest.approx(N_FRAMES / FPS) == result.duration_s
    assert '#EXT-X-MAP:URI="init.mp4"' in playlist and "#EXT-X-TARGETDURATION:2" in playlist
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")
    assert sorted(p.name for p in streamed.folder.iterdir()) == ["index.m3u8", "init.mp4", *[s.name for s in result.segments]]


def test_every_segment_starts_on_its_only_keyframe_and_decodes_on_its_own(streamed) -> None:
    """init.mp4 + one segment plays alone: its first video packet is its only keyframe, and it holds its span's audio."""
    import av

    init = (streamed.folder / "init.mp4").read_bytes()
    for segment in streamed.result.segments:
        data = (streamed.folder / segment.name).read_bytes()
        assert (len(data), segment.sha256) == (segment.bytes, hashlib.sha256(data).hexdigest())
        with av.open(io.BytesIO(init + data)) as alone:
            # (kind, start s, end s, keyframe) read while the container (which owns the streams) is open.
            packets = [(p.stream.type, float(p.pts * p.time_base), float((p.pts + p.duration) * p.time_base),
                        p.is_keyframe) for p in alone.demux() if p.size]
        video = [p for p in packets if p[0] == "video"]
        assert len(video) == segment.n_frames
        assert [p[3] for p in video] == [True] + [False] * (segment.n_frames - 1)
        # The segment carries the audio of its own span (AAC blocks of 1024 samples), not later:
        start, end = video[0][1], video[0][1] + segment.duration_s
        audio = [p[1:3] for p in packets if p[0] == "audio"]
        block_s = 1024 / RATE_HZ
        # Blocks are split between segments by start time, so each edge is within one block.
        assert abs(audio[0][0] - start) < block_s + 1e-6, (segment.index, audio[0], start)
        assert abs(audio[-1][1] - end) < block_s + 1e-6, (segment.index, audio[-1], end)
        with av.open(io.BytesIO(init + data)) as alone:
            decoded = list(alone.decode(video=0))
        first = decoded[0].to_ndarray(format="rgb24")
        assert len(decoded) == segment.n_frames
        assert np.abs(first.astype(int) - streamed.frames[segment.start_frame]).mean() < 3.0


def test_playing_the_playlist_gives_every_frame_and_the_audio_in_sync(streamed) -> None:
    """av.open on index.m3u8 decodes all 108 frames near the input and both clicks within 2 ms of their times."""
    played = decode_mp4(streamed.folder / "index.m3u8")
    assert played.frames.shape == streamed.frames.shape and played.fps == FPS
    error = np.abs(played.frames.astype(np.int16) - streamed.frames).mean(axis=(1, 2, 3))
    assert error.max() < 3.0, error.max()
    n_samples = N_FRAMES * RATE_HZ // FPS
    assert played.sample_rate_hz == RATE_HZ and len(played.audio) >= n_samples
    for t_s in CLICKS_S:
        at = int(round(t_s * RATE_HZ))
        window = np.abs(played.audio[at - 2400 : at + 2400])
        assert abs(int(np.argmax(window)) - 2400) <= 0.002 * RATE_HZ, (t_s, int(np.argmax(window)) - 2400)
    tone = played.audio[int(0.5 * RATE_HZ) : int(0.9 * RATE_HZ)]
    assert 0.05 < np.sqrt(np.mean(tone**2)) < 0.09  # the 0.1-amplitude tone (RMS 0.071) survives


def test_video_mp4_decodes_to_the_streams_exact_frames_and_samples(streamed) -> None:
    """video.mp4 (remuxed) and the stream decode to identical frames (np.array_equal) and identical audio."""
    played = decode_mp4(streamed.folder / "index.m3u8")
    filed = decode_mp4(streamed.folder.parent / "video.mp4")
    assert np.array_equal(played.frames, filed.frames)
    n_samples = N_FRAMES * RATE_HZ // FPS
    assert len(filed.audio) == n_samples
    assert np.array_equal(played.audio[:n_samples], filed.audio)


def test_video_mp4_has_encode_mp4s_layout(streamed) -> None:
    """The remux is faststart H.264 + AAC, 108 frames, 4.5 s both tracks, video at 0, AAC priming in the edit list."""
    info = probe_mp4(streamed.folder.parent / "video.mp4")
    assert (info["video_codec"], info["audio_codec"], info["frames"]) == ("h264", "aac", N_FRAMES)
    assert info["faststart"] is True and info["audio_priming_samples"] == 1024
    assert info["video_start_s"] == 0.0 and info["audio_start_s"] == 0.0
    assert info["duration_s"] == pytest.approx(4.5, abs=1e-6)
    assert info["audio_duration_s"] == pytest.approx(4.5, abs=1e-6)


def test_each_segment_is_on_disk_and_listed_before_close(streamed) -> None:
    """A segment is on disk with its final bytes and listed as soon as the next one starts; the one in progress is not."""
    segments = streamed.result.segments
    assert [[s.name for s in got] for got in streamed.returned] == [[], ["seg_00000.m4s"], ["seg_00001.m4s"]]
    assert "index.m3u8" not in streamed.listings[0] and not any(n.startswith("seg_") for n in streamed.listings[0])
    # The segment in progress is not visible under its name (the muxer writes `<name>.tmp` and
    # renames it only once complete); everything the playlist lists is already there.
    assert streamed.listings[1] == {"index.m3u8", "init.mp4", "seg_00000.m4s"}
    assert streamed.listings[2] == {"index.m3u8", "init.mp4", "seg_00000.m4s", "seg_00001.m4s"}
    for after_call, playlist in enumerate(streamed.playlists[1:], start=1):
        assert [uri for _, uri in _extinf(playlist)] == [s.name for s in segments[:after_call]]
        assert "#EXT-X-ENDLIST" not in playlist
        for name, data in streamed.bytes_seen[after_call].items():
            assert data == (streamed.folder / name).read_bytes()  # never rewritten after it appeared
    assert 0 < streamed.result.first_segment_s < streamed.result.encode_s
    assert streamed.result.first_segment_at < time.perf_counter()


def test_the_same_input_gives_the_same_bytes_and_stale_files_go(streamed, tmp_path: Path) -> None:
    """Re-encoding (in 36-frame chunks, over a crashed run's leftovers) writes byte-identical segments, playlist and video.mp4."""
    folder = tmp_path / "hls"
    folder.mkdir()
    for leftover in ("seg_00007.m4s", "seg_00003.m4s.tmp", "index.m3u8.tmp", "init.mp4"):
        (folder / leftover).write_bytes(b"half")
    (folder / "notes.txt").write_text("not ours")
    again = _stream(folder, streamed.frames.copy(), streamed.audio.copy(), chunk=36)
    assert [s.sha256 for s in again.result.segments] == [s.sha256 for s in streamed.result.segments]
    names = ["init.mp4", "index.m3u8", *[s.name for s in again.result.segments]]
    for name in names:
        assert (folder / name).read_bytes() == (streamed.folder / name).read_bytes(), name
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, "notes.txt"])
    remux_mp4(folder, tmp_path / "video.mp4")
    assert (tmp_path / "video.mp4").read_bytes() == (streamed.folder.parent / "video.mp4").read_bytes()


@pytest.mark.parametrize(("fps", "rate_hz", "segment_s", "n_frames"), [(25, 44_100, 1.0, 60), (30, 16_000, 0.5, 40)])
def test_other_rates_keep_segments_whole_frames_and_audio_in_sync(tmp_path: Path, fps, rate_hz, segment_s, n_frames) -> None:
    """At 25 fps / 44.1 kHz (1 s segments) and 30 fps / 16 kHz (0.5 s), segments hold whole frames and a click stays within 2 ms."""
    click_s = 1.3
    audio = _tone_with_clicks(int(n_frames / fps * rate_hz), rate_hz, (click_s,))
    frames = _moving_frames(n_frames, side=64)
    encoder = StreamEncoder(tmp_path, fps, n_frames, audio, rate_hz, segment_s=segment_s)
    for start in range(0, n_frames, 16):
        encoder.add_frames(frames[start : start + 16], start)
    result = encoder.close()
    per_segment = int(segment_s * fps)
    assert [s.n_frames for s in result.segments][:-1] == [per_segment] * (len(result.segments) - 1)
    assert [d for d, _ in _extinf(result.playlist.read_text())] == pytest.approx([s.duration_s for s in result.segments], abs=1e-6)
    played = decode_mp4(result.playlist)
    assert len(played.frames) == n_frames
    at = int(round(click_s * rate_hz))
    assert abs(int(np.argmax(np.abs(played.audio[at - rate_hz // 10 : at + rate_hz // 10]))) - rate_hz // 10) <= 0.002 * rate_hz


def test_chunks_out_of_order_oversized_or_resized_are_refused(tmp_path: Path) -> None:
    """A gap, a chunk past the slot's end, a size change and an early close raise StageInputError naming the field."""
    frames = _moving_frames(8, side=64)
    encoder = StreamEncoder(tmp_path, FPS, 8, np.zeros(8000, np.float32), RATE_HZ)
    encoder.add_frames(frames[:4], 0)
    cases = [(lambda: encoder.add_frames(frames[5:], 5), "start_frame"),
             (lambda: encoder.add_frames(np.concatenate([frames, frames]), 4), "frames"),
             (lambda: encoder.add_frames(_moving_frames(4, side=32), 4), "frames"),
             (lambda: encoder.close(), "frames")]
    for call, field in cases:
        with pytest.raises(StageInputError) as caught:
            call()
        assert caught.value.field == field
    encoder.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StageInputError, match="aborted"):
        encoder.add_frames(frames[4:], 4)


def test_an_exception_inside_with_removes_the_partial_stream(tmp_path: Path) -> None:
    """remux_mp4 refuses a stream still being written; leaving the `with` block by an exception removes its files."""
    frames = _moving_frames(60, side=64)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError, match="warp failed"):
        with StreamEncoder(tmp_path, FPS, 96, np.zeros(96_000, np.float32), RATE_HZ) as encoder:
            assert encoder.add_frames(frames, 0)  # segment 0 is on disk, the playlist still open
            with pytest.raises(StageInputError, match="not finished") as caught:
                remux_mp4(tmp_path, tmp_path / "video.mp4")
            assert caught.value.field == "hls_folder" and not (tmp_path / "video.mp4").exists()
            raise RuntimeError("warp failed")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_settings_that_cannot_stream_are_refused(tmp_path: Path) -> None:
    """fps 0, no frames, a segment shorter than a frame and an unknown playlist type name their fields."""
    silence = np.zeros(100, np.float32)
    for kwargs, field in [({"fps": 0}, "output.fps"), ({"n_frames": 0}, "n_frames"),
                          ({"segment_s": 0.01}, "segment_s"), ({"playlist_type": "live"}, "playlist_type")]:
        settings = {"folder": tmp_path, "fps": FPS, "n_frames": 4, "audio": silence, "sample_rate_hz": RATE_HZ, **kwargs}
        with pytest.raises(StageInputError) as caught:
            StreamEncoder(**settings)
        assert caught.value.field == field
