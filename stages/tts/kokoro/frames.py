"""Framing between the backend and its worker processes: a 4-byte big-endian length, then a pickle.

Both ends are this package, so pickle's trust model holds: nothing else writes to these pipes.
"""

from __future__ import annotations

import pickle
import struct
from typing import BinaryIO

_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> object | None:
    """The next pickled frame, or None at end of stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return pickle.loads(payload)


def write_frame(stream: BinaryIO, message: object) -> None:
    """Send one pickled frame and flush it."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()
