"""HLS text for the channel: read a slot's VOD playlist, write the live channel playlist.

The slot playlists come from FFmpeg's hls muxer; the channel playlist is a splice of several of
them under one live timeline (program date times, discontinuities, a sliding window), which no
muxer writes — no media is muxed here, the segments are the slots' own files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from vortexd.channel_plan import Aired, Media, Segment

HLS_VERSION = 7
"""EXT-X-MAP in a media playlist without I-frames-only needs version 6; fMP4/CMAF is served as 7."""

_MAP = re.compile(r'#EXT-X-MAP:.*?URI="([^"]+)"')
_EXTINF = re.compile(r"#EXTINF:([0-9.]+)\s*,")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class PlaylistError(ValueError):
    """A slot's playlist is not one the channel can air (with the reason)."""


def _safe_name(uri: str) -> str:
    # The channel links these files by name: a URI must be a plain file beside the playlist,
    # never a path that climbs out of the slot's folder or a remote address.
    if not _SAFE_NAME.fullmatch(uri) or uri in (".", ".."):
        raise PlaylistError(f"segment URI {uri!r} is not a plain file name beside the playlist")
    return uri


def parse_vod(text: str) -> Media:
    """The init segment and media segments of a finished (EXT-X-ENDLIST) fMP4 HLS playlist.

    Raises `PlaylistError` for a playlist that is not a complete single-rendition fMP4 VOD:
    no EXTM3U header, no EXT-X-MAP (or more than one), no segment, or no EXT-X-ENDLIST.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U header)")
    maps = [match.group(1) for line in lines if (match := _MAP.match(line))]
    if len(maps) != 1:
        raise PlaylistError(f"expected one EXT-X-MAP init segment, found {len(maps)}")
    if "#EXT-X-ENDLIST" not in lines:
        raise PlaylistError("the playlist is not finished (no #EXT-X-ENDLIST)")
    segments, duration = [], None
    for line in lines[1:]:
        if (match := _EXTINF.match(line)):
            duration = float(match.group(1))
        elif not line.startswith("#"):
            if duration is None or not math.isfinite(duration) or duration <= 0:
                raise PlaylistError(f"segment {line!r} has no positive #EXTINF duration")
            segments.append(Segment(_safe_name(line), duration))
            duration = None
    if not segments:
        raise PlaylistError("the playlist lists no media segment")
    return Media(_safe_name(maps[0]), tuple(segments))


def target_duration_of(media: Media) -> int:
    """The EXT-X-TARGETDURATION `media` needs: its longest EXTINF rounded to the nearest integer."""
    return max(int(math.floor(segment.duration_s + 0.5)) for segment in media.segments)


def iso_utc(wall_s: float) -> str:
    """`wall_s` (seconds since the epoch) as ISO 8601 UTC with milliseconds, e.g.
    2025-01-01T00:00:45.000Z — the form EXT-X-PROGRAM-DATE-TIME and hls.js expect."""
    moment = datetime.fromtimestamp(wall_s, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def render_live(window: Sequence[Aired], now_s: float, target_duration_s: int) -> str:
    """The live media playlist for `window` as of `now_s` (no EXT-X-ENDLIST: the channel goes on).

    Each entry opens with its program date time (its air time) and its own EXT-X-MAP; every
    entry after the first listed one is preceded by EXT-X-DISCONTINUITY (its timestamps restart).
    Only segments whose air has come are listed (`Aired.revealed`).
    """
    if not window:
        raise ValueError("a live playlist needs at least one aired entry")
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", f"#EXT-X-TARGETDURATION:{target_duration_s}",
             f"#EXT-X-MEDIA-SEQUENCE:{window[0].first_msn}",
             f"#EXT-X-DISCONTINUITY-SEQUENCE:{window[0].ordinal}",
             # The encoder starts every segment on a keyframe (GOP-aligned CMAF).
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    for position, entry in enumerate(window):
        if position:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso_utc(entry.air_time_s)}")
        lines.append(f'#EXT-X-MAP:URI="{entry.folder}/{entry.media.init}"')
        for segment in entry.revealed(now_s):
            lines.append(f"#EXTINF:{segment.duration_s:.6f},")
            lines.append(f"{entry.folder}/{segment.name}")
    return "\n".join(lines) + "\n"
