"""The slot's video.mp4 made from a finished HLS stream's packets: a stream copy, never a second encode.

The HLS stream puts the AAC priming packet at t = 0 and video frame 0 at t = 1024 samples (see
stages/encode/hls.py). The MP4 gets the layout encode_mp4 writes: every timestamp moves back by
that offset, so video starts at 0 and audio at −1024 samples, which the MP4 muxer records as the
audio edit list (media_time = 1024) that players honour. The packets themselves are untouched,
so the file and the stream decode to the same frames and samples.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from stages.encode.hls import PLAYLIST_NAME
from stages.errors import StageInputError


@dataclass(frozen=True)
class RemuxStats:
    """What `remux_mp4` wrote."""

    path: Path
    video_packets: int
    audio_packets: int
    file_bytes: int
    remux_s: float


def _ticks(seconds: Fraction, time_base: Fraction) -> int:
    """`seconds` in units of `time_base`, exactly when it divides (it does for our streams)."""
    ticks = seconds / time_base
    return ticks.numerator // ticks.denominator if ticks.denominator == 1 else round(ticks)


def remux_mp4(hls_folder: Path | str, out_path: Path | str) -> RemuxStats:
    """Copy the packets of `hls_folder`/index.m3u8 (a closed stream) into an MP4 at `out_path`.

    Refuses (StageInputError "hls_folder") a folder without a playlist or whose playlist has no
    EXT-X-ENDLIST yet.
    The MP4 has its index at the front (+faststart), video starting at 0, the AAC priming hidden by
    the audio edit list, and no creation time or version strings (the same stream gives the same
    bytes). A failed remux leaves no file at `out_path`.
    """
    import av

    playlist = Path(hls_folder) / PLAYLIST_NAME
    out_path = Path(out_path)
    if not playlist.is_file():
        raise StageInputError("hls_folder", "no index.m3u8 in the folder", path=str(hls_folder))
    if "#EXT-X-ENDLIST" not in playlist.read_text(encoding="utf-8", errors="replace"):
        # An open playlist is a live stream to FFmpeg's hls demuxer, which would wait for more.
        raise StageInputError("hls_folder", "the stream is not finished (no EXT-X-ENDLIST)", path=str(hls_folder))
    started = time.perf_counter()
    with av.open(str(playlist)) as source:
        if not source.streams.video:
            raise StageInputError("hls_folder", "the stream has no video", path=str(hls_folder))
        streams = [source.streams.video[0]] + list(source.streams.audio[:1])
        target = av.open(str(out_path), mode="w", format="mp4",
                         options={"movflags": "+faststart", "fflags": "+bitexact"})
        try:
            counts = _copy_packets(source, streams, target)
        except BaseException:
            with contextlib.suppress(Exception):
                target.close()
            out_path.unlink(missing_ok=True)
            raise
        target.close()
    return RemuxStats(path=out_path, video_packets=counts[0], audio_packets=counts[1],
                      file_bytes=out_path.stat().st_size, remux_s=time.perf_counter() - started)


def _copy_packets(source, streams, target) -> tuple[int, int]:
    """Mux every packet of `streams` into `target`, shifted so video starts at 0; (video, audio) counts."""
    video_in = streams[0]
    # Where the stream's video starts (the AAC priming offset), in seconds.
    offset_s = Fraction(video_in.start_time or 0) * video_in.time_base
    outputs, shifts = {}, {}
    for stream in streams:
        out = target.add_stream_from_template(stream)
        out.time_base = stream.time_base  # keep the stream's exact timescales (no rounding)
        outputs[stream.index] = out
        shifts[stream.index] = _ticks(offset_s, stream.time_base)
    counts = {stream.index: 0 for stream in streams}
    for packet in source.demux(*streams):
        if packet.dts is None:  # the demuxer's end-of-stream marker, not data
            continue
        index = packet.stream.index
        packet.pts -= shifts[index]
        packet.dts -= shifts[index]
        packet.stream = outputs[index]
        target.mux(packet)
        counts[index] += 1
    audio_count = counts[streams[1].index] if len(streams) > 1 else 0
    return counts[video_in.index], audio_count
