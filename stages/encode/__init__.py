"""Encode, decode and publish: H.264 + AAC MP4 files and atomically published slot folders."""

from stages.encode.decode import DecodedVideo, decode_mp4, probe_mp4
from stages.encode.mp4 import DEFAULT_CRF, DEFAULT_PRESET, EncodeStats, encode_mp4
from stages.encode.publish import PublishedSlot, SlotExistsError, clean_stale_temp, publish_slot

__all__ = [
    "DEFAULT_CRF",
    "DEFAULT_PRESET",
    "DecodedVideo",
    "EncodeStats",
    "PublishedSlot",
    "SlotExistsError",
    "clean_stale_temp",
    "decode_mp4",
    "encode_mp4",
    "probe_mp4",
    "publish_slot",
]
