"""The HLS/CMAF layout the streaming encoder writes, and the one timeline both of its streams share.

Folder layout (what a player following the folder sees):
    init.mp4          the CMAF init segment (moov): created empty when the muxer opens, filled
                      just before the first media segment is renamed into place and the playlist
                      first appears, so a player that follows the playlist never reads it half done
    seg_00000.m4s …   media segments (moof+mdat), each written as `<name>.tmp`, then renamed
    index.m3u8        the playlist (EXT-X-MAP, one EXTINF per segment; EXT-X-ENDLIST at close),
                      rewritten through `index.m3u8.tmp` + rename after every segment

Timeline: the AAC encoder emits 1024 "priming" samples before the first real one. The MP4 file
(encode_mp4) hides them with an edit list, but HLS players (hls.js, and FFmpeg's hls demuxer
across segments) place fragments by their `tfdt` decode times and ignore edit lists. So the stream
has none: the priming packet starts at t = 0 and video frame 0 starts at exactly 1024 samples,
in a video timescale fine enough to hold that offset with no rounding. Audio sample 0 and video
frame 0 then share one presentation time in every player. `remux_mp4` moves that offset back into
an edit list, giving the same file layout as encode_mp4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from stages.encode.mp4 import AAC_FRAME_SAMPLES

PLAYLIST_NAME = "index.m3u8"
INIT_NAME = "init.mp4"
SEGMENT_PATTERN = "seg_%05d.m4s"
TEMP_SUFFIX = ".tmp"
"""FFmpeg's `temp_file` flag writes `<name>.tmp` and renames it when complete."""

PLAYLIST_TYPES = ("event", "vod")

# Options for the MP4 muxer inside FFmpeg's hls muxer (one per segment):
# - use_editlist=0 + avoid_negative_ts=disabled: no edit list and no shifting, so each track's
#   tfdt is its own first decode time (see the module docstring);
# - frag_discont: without it the muxer starts every track's tfdt at 0, which would silently
#   move the video 1024 samples earlier than its audio;
# - bitexact: no library version strings, so the bytes depend only on the input.
_SEGMENT_MUXER_OPTIONS = "movflags=+frag_discont:use_editlist=0:avoid_negative_ts=disabled:fflags=+bitexact"


def segment_name(index: int) -> str:
    """The file name of media segment `index` (0-based): seg_00000.m4s, seg_00001.m4s, …"""
    return SEGMENT_PATTERN % index


def own_file_names(folder: Path) -> list[Path]:
    """The files in `folder` this layout writes (playlist, init, segments and their .tmp twins)."""
    if not folder.is_dir():
        return []
    names = {PLAYLIST_NAME, INIT_NAME}
    return sorted(
        path for path in folder.iterdir()
        if path.name.removesuffix(TEMP_SUFFIX) in names
        or (path.name.startswith("seg_") and path.name.removesuffix(TEMP_SUFFIX).endswith(".m4s"))
    )


@dataclass(frozen=True)
class StreamTimeline:
    """Tick arithmetic shared by the video and audio packets of one stream.

    `ticks_per_s` is the video track's timescale: a multiple of the sample rate (so the AAC
    priming offset is a whole number of ticks) that fps divides (so every frame is too).
    """

    fps: int
    sample_rate_hz: int

    @property
    def ticks_per_s(self) -> int:
        """Video timescale: the sample rate times the smallest factor that fps divides."""
        return self.sample_rate_hz * (self.fps // math.gcd(self.sample_rate_hz, self.fps))

    @property
    def time_base(self) -> Fraction:
        """The video stream's time base, 1 / ticks_per_s."""
        return Fraction(1, self.ticks_per_s)

    @property
    def frame_ticks(self) -> int:
        """Duration of one video frame in ticks."""
        return self.ticks_per_s // self.fps

    @property
    def priming_ticks(self) -> int:
        """Where video frame 0 starts: after the AAC priming samples, in video ticks."""
        return AAC_FRAME_SAMPLES * (self.ticks_per_s // self.sample_rate_hz)


def hls_muxer_options(folder: Path, segment_frames: int, fps: int, playlist_type: str) -> dict[str, str]:
    """Options for FFmpeg's `hls` muxer writing fMP4 segments of `segment_frames` into `folder`.

    The muxer cuts a segment at the first keyframe at or after n·hls_time. Keyframes sit exactly
    on segment starts, so hls_time is set a hair *under* the segment length (floored to the µs
    the option holds): every keyframe then cuts, however the segment length rounds.
    """
    hls_time_us = (segment_frames * 1_000_000) // fps
    return {
        "hls_segment_type": "fmp4",
        "hls_time": f"{hls_time_us / 1_000_000:.6f}",
        "hls_playlist_type": playlist_type,
        "hls_list_size": "0",
        "hls_flags": "temp_file+independent_segments",
        "hls_fmp4_init_filename": INIT_NAME,
        "hls_segment_filename": str(folder / SEGMENT_PATTERN),
        "hls_segment_options": _SEGMENT_MUXER_OPTIONS,
        "fflags": "+bitexact",
    }
