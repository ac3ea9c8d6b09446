"""The verify stage: objective checks on a rendered slot (whole, or chunk by chunk beside the warp)
and the lip-sync judge."""

from stages.verify.checks import Verdict
from stages.verify.lipsync import (
    AVOffset,
    LagResult,
    best_lag,
    envelope_reference,
    measure_av_offset,
    mouth_aperture,
    phoneme_reference,
)
from stages.verify.stream import StreamingVerifier, verify_slot

__all__ = [
    "AVOffset",
    "LagResult",
    "StreamingVerifier",
    "Verdict",
    "best_lag",
    "envelope_reference",
    "measure_av_offset",
    "mouth_aperture",
    "phoneme_reference",
    "verify_slot",
]
