"""The live channel on real files: playlist shape, filler, window and grace, restart, playback.

Slots are real fMP4 HLS folders made by FFmpeg's hls muxer (tests.support.hls_media): 5 s each
(segments of 2, 2 and 1 s), a flat grey level and a tone that tell them apart when decoded. The
channel airs every 5 s; times are given explicitly (wall-clock seconds) so a timeline is exact.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.hls_media import FPS, SAMPLE_RATE, dominant_hz, make_hls_slot
from vortexd.channel import (
    PLAYLIST_NAME,
    STATE_NAME,
    Channel,
    ChannelOptions,
    PlaylistError,
    Schedule,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CADENCE = 5.0
LEVELS = {"a": 40, "b": 200, "filler": 120}
TONES = {"a": 440.0, "b": 880.0, "filler": 220.0}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One HLS folder per kind of slot, made once for the module."""
    root = tmp_path_factory.mktemp("hls")
    return {name: make_hls_slot(root / name / "hls", level=LEVELS[name], tone_hz=TONES[name])
            for name in LEVELS}


@pytest.fixture()
def slots(made: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """This test's own copies of the slot folders (a test may delete or damage them)."""
    return {name: Path(shutil.copytree(folder, tmp_path / "out" / name / "hls"))
            for name, folder in made.items()}


def new_channel(tmp_path: Path, slots: dict[str, Path], *, started_s: float = T0 - 10,
                **options: object) -> Channel:
    """A channel in tmp_path/channel with the 'filler' slot as filler, airing every CADENCE s,
    whose wall clock reads `started_s` (every later call passes its time explicitly)."""
    return Channel(tmp_path / "channel", slots["filler"], Schedule(T0, CADENCE),
                   ChannelOptions(**options), clock=lambda: started_s)  # type: ignore[arg-type]


def playlist(channel: Channel) -> str:
    """The live playlist's text."""
    return channel.playlist_path.read_text()


def listed_uris(text: str) -> list[str]:
    """Every file the playlist points at: init segments and media segments, in order."""
    maps = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    return maps + [line for line in text.splitlines() if line and not line.startswith("#")]


def test_each_slot_enters_at_its_air_time_with_its_date_map_and_discontinuity(
        tmp_path: Path, slots: dict[str, Path]) -> None:
    """Slots a, b, a, b air at T0, T0+5 …: the playlist is a live fMP4 playlist (version 7, no
    ENDLIST) whose window holds the last 3 slots, each opened by its program date time and init
    segment, separated by discontinuities, with the sequence numbers of what slid out."""
    channel = new_channel(tmp_path, slots)
    assert channel.tick(T0 - 1).aired is None and not channel.playlist_path.exists()
    for k, name in enumerate("abab"):
        assert channel.slot_ready(k, f"slot-{k}", slots[name])
    channel.tick(T0)
    first = playlist(channel)
    assert first.count("#EXTINF") == 1  # only the segment whose air has come
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z" in first
    channel.tick(T0 + 4.0)
    assert playlist(channel).count("#EXTINF") == 3
    for k in range(1, 4):
        aired = channel.tick(T0 + CADENCE * k).aired
        assert aired is not None and (aired.index, aired.slot_id) == (k, f"slot-{k}")
    text = playlist(channel)
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n")
    assert "#EXT-X-MEDIA-SEQUENCE:3\n" in text and "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in text
    assert "#EXT-X-ENDLIST" not in text and "#EXT-X-PLAYLIST-TYPE" not in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 2
    assert re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", text) == [
        "2023-11-14T22:13:25.000Z", "2023-11-14T22:13:30.000Z", "2023-11-14T22:13:35.000Z"]
    assert re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text) == [
        "air-000001/init.mp4", "air-000002/init.mp4", "air-000003/init.mp4"]
    # Each date and map opens its slot: it comes right before the slot's first segment.
    assert re.search(r"#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:30.000Z\n"
                     r'#EXT-X-MAP:URI="air-000002/init.mp4"\n#EXTINF:2.000000,\nair-000002/seg_00000.m4s\n', text)
    assert all((channel.dir / uri).is_file() for uri in listed_uris(text))
    assert {"EXTINF:" + d for d in re.findall(r"#EXTINF:([0-9.]+),", text)} <= {"EXTINF:2.000000",
                                                                                 "EXTINF:1.000000"}


def test_aired_segments_outlive_the_slot_folder_and_are_deleted_after_the_grace(
        tmp_path: Path, slots: dict[str, Path], made: dict[str, Path]) -> None:
    """The channel keeps its own links to what it airs: deleting the slot folder breaks nothing,
    the bytes are the slot's; once a slot leaves the window its files go after the grace."""
    channel = new_channel(tmp_path, slots, window_slots=2, grace_s=3.0)
    channel.slot_ready(0, "slot-0", slots["a"])
    channel.tick(T0)
    shutil.rmtree(slots["a"].parent)
    channel.tick(T0 + 4)
    for name in ("init.mp4", "seg_00000.m4s", "seg_00001.m4s", "seg_00002.m4s"):
        assert (channel.dir / "air-000000" / name).read_bytes() == (made["a"] / name).read_bytes()
    channel.tick(T0 + CADENCE)  # filler airs at index 1; window of 2 still holds index 0
    result = channel.tick(T0 + 2 * CADENCE)  # index 2: index 0 slides out
    assert result.deleted == () and (channel.dir / "air-000000").is_dir()
    assert "air-000000/" not in playlist(channel)
    assert channel.tick(T0 + 2 * CADENCE + 2.9).deleted == ()
    assert channel.tick(T0 + 2 * CADENCE + 3.0).deleted == ("air-000000",)
    assert not (channel.dir / "air-000000").exists()
    assert all((channel.dir / uri).is_file() for uri in listed_uris(playlist(channel)))


def test_a_missed_slot_airs_the_filler_on_time_and_the_next_slot_airs_after_it(
        tmp_path: Path, slots: dict[str, Path], made: dict[str, Path]) -> None:
    """Index 1 never becomes ready: at its air time the filler airs (counted), and index 2's slot
    airs at its own air time after the filler."""
    channel = new_channel(tmp_path, slots)
    channel.slot_ready(0, "slot-0", slots["a"])
    channel.slot_ready(2, "slot-2", slots["b"])
    channel.tick(T0)
    filler = channel.tick(T0 + CADENCE).aired
    assert filler is not None and filler.filler and filler.slot_id == "filler"
    assert filler.air_time_s == T0 + CADENCE and "index 1 not ready" in filler.reason
    assert channel.stats(T0 + CADENCE).fillers_aired == 1
    assert (channel.dir / filler.folder / "seg_00000.m4s").read_bytes() == \
        (made["filler"] / "seg_00000.m4s").read_bytes()
    nxt = channel.tick(T0 + 2 * CADENCE).aired
    assert nxt is not None and (nxt.index, nxt.slot_id, nxt.filler) == (2, "slot-2", False)
    text = playlist(channel)
    assert text.index("air-000000/") < text.index(filler.folder + "/") < text.index(nxt.folder + "/")
    stats = channel.stats(T0 + 2 * CADENCE)
    assert (stats.slots_aired, stats.fillers_aired, stats.on_air.slot_id) == (2, 1, "slot-2")


def test_a_slot_published_after_its_air_time_does_not_air_late(tmp_path: Path, slots: dict[str, Path]) -> None:
    """The filler took index 0's air time; the slot arriving later is refused, never aired."""
    channel = new_channel(tmp_path, slots)
    assert channel.tick(T0).aired.filler
    assert channel.slot_ready(0, "slot-0", slots["a"]) is False
    assert channel.tick(T0 + CADENCE).aired.filler


def test_a_slot_whose_files_vanish_before_its_air_time_is_replaced_by_the_filler(
        tmp_path: Path, slots: dict[str, Path]) -> None:
    """Registered, then deleted before its air: the filler airs, with the reason."""
    channel = new_channel(tmp_path, slots)
    channel.slot_ready(0, "slot-0", slots["a"])
    (slots["a"] / "seg_00001.m4s").unlink()
    aired = channel.tick(T0).aired
    assert aired.filler and "slot-0 cannot air" in aired.reason and "seg_00001.m4s" in aired.reason


def test_unairable_slot_folders_are_refused_when_published(tmp_path: Path, slots: dict[str, Path]) -> None:
    """An unfinished playlist (no ENDLIST) or segments over the target duration are refused."""
    channel = new_channel(tmp_path, slots)
    index = slots["a"] / "index.m3u8"
    index.write_text(index.read_text().replace("#EXT-X-ENDLIST\n", ""))
    with pytest.raises(PlaylistError, match="ENDLIST"):
        channel.slot_ready(0, "slot-0", slots["a"])
    with pytest.raises(PlaylistError, match="target duration"):
        Channel(tmp_path / "other", slots["b"], Schedule(T0, CADENCE), ChannelOptions(target_duration_s=1),
                clock=lambda: T0)


def test_a_new_channel_on_the_same_folder_continues_where_the_last_one_stopped(
        tmp_path: Path, slots: dict[str, Path]) -> None:
    """After index 0 and 1 aired (and index 2 was registered), a new Channel — as after a crash —
    does not air them again, keeps the sequence numbers running, airs the registered slot at its
    time, and removes the half-made airing folders a crash left behind."""
    first = new_channel(tmp_path, slots)
    first.slot_ready(0, "slot-0", slots["a"])
    first.slot_ready(2, "slot-2", slots["b"])
    first.tick(T0)
    first.tick(T0 + CADENCE + 1)
    before = playlist(first)
    del first
    (tmp_path / "channel" / ".air-000002.tmp").mkdir()  # a crash while placing the next airing
    (tmp_path / "channel" / "air-000002").mkdir()
    second = new_channel(tmp_path, slots, started_s=T0 + CADENCE + 2)
    assert not (tmp_path / "channel" / ".air-000002.tmp").exists()
    assert not (tmp_path / "channel" / "air-000002").exists()
    assert second.tick(T0 + CADENCE + 2).aired is None
    assert playlist(second).count("#EXTINF") >= before.count("#EXTINF")
    aired = second.tick(T0 + 2 * CADENCE).aired
    assert (aired.index, aired.slot_id, aired.ordinal, aired.first_msn) == (2, "slot-2", 2, 6)
    assert second.tick(T0 + 2 * CADENCE + 1).aired is None
    assert [(e.index, e.ordinal) for e in second.state.window] == [(0, 0), (1, 1), (2, 2)]
    assert second.stats(T0 + 11).fillers_aired == 1 and second.stats(T0 + 11).slots_aired == 2
    assert (tmp_path / "channel" / STATE_NAME).is_file() and (tmp_path / "channel" / PLAYLIST_NAME).is_file()


def decode_live(playlist_path: Path, video_frames: int) -> tuple[list[int], np.ndarray, int]:
    """Play a live playlist from its first listed segment with FFmpeg's hls demuxer (PyAV) until
    `video_frames` frames are decoded: each frame's mean grey level, the audio samples, and how
    many video packets the demuxer flagged as discard.

    FFmpeg's hls demuxer does not act on EXT-X-DISCONTINUITY (FFmpeg trac #5419): it feeds every
    segment to one mov demuxer, which flags the first fragment whose timestamps restart as a
    discard (its dts is not after the previous one). A player that honours the discontinuity,
    as hls.js and Safari do, plays that fragment; so does this one, by decoding those packets'
    bytes as ordinary packets.
    """
    levels: list[int] = []
    audio: list[np.ndarray] = []
    discarded = 0
    with av.open(str(playlist_path), options={"live_start_index": "0"}) as container:
        for packet in container.demux():
            if packet.is_discard:
                discarded += packet.stream.type == "video"
                again = av.Packet(bytes(packet))
                again.pts, again.dts, again.time_base = packet.pts, packet.dts, packet.time_base
                frames = packet.stream.codec_context.decode(again)
            else:
                frames = packet.decode()
            for frame in frames:
                if isinstance(frame, av.VideoFrame):
                    levels.append(int(round(frame.to_ndarray(format="rgb24").mean())))
                else:
                    audio.append(frame.to_ndarray().reshape(-1))
            # A live playlist has no end: the demuxer would wait for the next segment to be listed.
            if len(levels) >= video_frames:
                break
    return levels, np.concatenate(audio), discarded


@pytest.mark.timeout(120)
def test_a_player_plays_the_channel_across_slot_boundaries(tmp_path: Path, slots: dict[str, Path]) -> None:
    """FFmpeg's hls demuxer plays live.m3u8 from its first segment: slot a's frames and tone, then
    the filler's (index 1 was missed), then slot b's — the timestamps restart at each
    discontinuity and each slot's own init segment is used."""
    channel = new_channel(tmp_path, slots)
    channel.slot_ready(0, "slot-0", slots["a"])
    channel.slot_ready(2, "slot-2", slots["b"])
    for at in (T0, T0 + CADENCE, T0 + 2 * CADENCE, T0 + 2 * CADENCE + 4):
        channel.tick(at)
    per_slot = FPS * int(CADENCE)
    levels, audio, discarded = decode_live(channel.playlist_path, 2 * per_slot + FPS * 2)
    assert discarded <= 2 * 2 * FPS  # at most the first 2 s segment after each of the 2 boundaries
    expected = [LEVELS["a"]] * per_slot + [LEVELS["filler"]] * per_slot + [LEVELS["b"]] * (FPS * 2)
    assert len(levels) >= len(expected)
    assert np.abs(np.array(levels[:len(expected)]) - np.array(expected)).max() <= 3
    second = SAMPLE_RATE  # compare the middle of each slot's audio, away from AAC priming
    assert audio.size >= int(2 * CADENCE + 1) * second
    for name, start in (("a", 1), ("filler", 6), ("b", 11)):
        assert dominant_hz(audio[start * second:(start + 3) * second if name != "b" else
                                 (start + 1) * second]) == pytest.approx(TONES[name], abs=2)
