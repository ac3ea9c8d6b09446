"""The channel's state file and atomic file writes in the channel folder.

The state is a small JSON document rewritten atomically (temp file, fsync, rename, fsync of the
folder) after every change, so a `kill -9` leaves either the old or the new state — never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from stages.durable import fsync_path
from vortexd.channel_plan import Aired, ChannelState, Media, Retired, Segment

STATE_VERSION = 1


class ChannelStateError(RuntimeError):
    """The channel's state file cannot be read (with the path and the reason)."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old or the new content."""
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)  # served read-only over HTTP: world-readable like the segments
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def _media_json(media: Media) -> dict[str, Any]:
    return {"init": media.init, "segments": [[s.name, s.duration_s] for s in media.segments]}


def _aired_json(entry: Aired) -> dict[str, Any]:
    return {"ordinal": entry.ordinal, "index": entry.index, "slot_id": entry.slot_id,
            "filler": entry.filler, "air_time_s": entry.air_time_s, "first_msn": entry.first_msn,
            "folder": entry.folder, "reason": entry.reason, "media": _media_json(entry.media)}


def state_to_json(state: ChannelState) -> bytes:
    """`state` as the bytes of the state file."""
    document = {
        "version": STATE_VERSION,
        "window": [_aired_json(entry) for entry in state.window],
        "retired": [[item.folder, item.delete_after_s] for item in state.retired],
        "ready": {str(index): list(value) for index, value in sorted(state.ready.items())},
        "next_ordinal": state.next_ordinal, "next_msn": state.next_msn,
        "last_index": state.last_index, "last_air_time_s": state.last_air_time_s,
        "slots_aired": state.slots_aired, "fillers_aired": state.fillers_aired,
        "air_times_skipped": state.air_times_skipped,
    }
    return (json.dumps(document, indent=1) + "\n").encode()


def _aired_from(item: dict[str, Any]) -> Aired:
    media = Media(item["media"]["init"],
                  tuple(Segment(str(name), float(duration)) for name, duration in item["media"]["segments"]))
    return Aired(ordinal=int(item["ordinal"]), index=int(item["index"]), slot_id=str(item["slot_id"]),
                 filler=bool(item["filler"]), air_time_s=float(item["air_time_s"]),
                 first_msn=int(item["first_msn"]), folder=str(item["folder"]), media=media,
                 reason=str(item.get("reason", "")))


def state_from_json(data: bytes) -> ChannelState:
    """The state stored in `data` (raises ValueError/KeyError/TypeError on a malformed file)."""
    document = json.loads(data)
    if document.get("version") != STATE_VERSION:
        raise ValueError(f"state file version {document.get('version')!r}, expected {STATE_VERSION}")
    last_index = document["last_index"]
    last_air = document["last_air_time_s"]
    return ChannelState(
        window=tuple(_aired_from(item) for item in document["window"]),
        retired=tuple(Retired(str(folder), float(after)) for folder, after in document["retired"]),
        ready={int(index): (str(value[0]), str(value[1])) for index, value in document["ready"].items()},
        next_ordinal=int(document["next_ordinal"]), next_msn=int(document["next_msn"]),
        last_index=None if last_index is None else int(last_index),
        last_air_time_s=None if last_air is None else float(last_air),
        slots_aired=int(document["slots_aired"]), fillers_aired=int(document["fillers_aired"]),
        air_times_skipped=int(document["air_times_skipped"]),
    )


def load_state(path: Path) -> ChannelState:
    """The state in `path`, or a fresh one when the channel has never aired there.

    A state file that exists but cannot be read is an error, not a fresh start: starting over
    would reuse media sequence numbers players have already seen.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ChannelState()
    try:
        return state_from_json(data)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise ChannelStateError(f"channel state {path} is unreadable ({error}); move it aside to "
                                "start the channel over with new sequence numbers") from error
