"""The verify stage: objective checks on a rendered slot and the lip-sync judge."""

from stages.verify.checks import Verdict, verify_slot
from stages.verify.lipsync import (
    AVOffset,
    LagResult,
    best_lag,
    envelope_reference,
    measure_av_offset,
    mouth_aperture,
    phoneme_reference,
)

__all__ = [
    "AVOffset",
    "LagResult",
    "Verdict",
    "best_lag",
    "envelope_reference",
    "measure_av_offset",
    "mouth_aperture",
    "phoneme_reference",
    "verify_slot",
]
