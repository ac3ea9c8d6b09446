"""How many frames one W+G step may batch: from memory measured at warm-up, not from a constant.

The step's peak memory in the stage's region grows linearly with the chunk: weights, the bound
actor and the framework's workspaces are fixed, activations are per frame. Two probe steps (1 and
2 frames), measured by the region's pool, give both terms; the largest chunk whose predicted peak
fits the budget is taken, and the engine built at that size is measured once more, so a
misprediction is caught before serving.
"""

from __future__ import annotations

from dataclasses import dataclass

from vram import StageMemoryExceeded

PROBE_CHUNKS = (1, 2)
"""Chunk sizes the peak model is fitted on (cheap, and far enough apart to see the slope)."""


@dataclass(frozen=True)
class PeakModel:
    """peak_bytes(b) = fixed_bytes + b · per_frame_bytes."""

    fixed_bytes: int
    per_frame_bytes: int

    @classmethod
    def fit(cls, peaks_by_chunk: dict[int, int]) -> "PeakModel":
        """The line through the smallest and largest probe (peaks never shrink with the chunk)."""
        (b0, p0), (b1, p1) = min(peaks_by_chunk.items()), max(peaks_by_chunk.items())
        if b1 == b0:
            raise ValueError("need peaks at two different chunk sizes")
        per_frame = max(0, -(-(p1 - p0) // (b1 - b0)))  # rounded up: never predict too little
        return cls(p0 - b0 * per_frame, per_frame)

    def peak_bytes(self, chunk_frames: int) -> int:
        """Predicted peak for a chunk of `chunk_frames`."""
        return self.fixed_bytes + chunk_frames * self.per_frame_bytes

    def largest_chunk(self, budget_bytes: int, limit: int) -> int:
        """The largest chunk ≤ `limit` predicted to fit `budget_bytes` (0 when not even one fits)."""
        if self.per_frame_bytes == 0:
            return limit if self.fixed_bytes <= budget_bytes else 0
        return max(0, min(limit, (budget_bytes - self.fixed_bytes) // self.per_frame_bytes))


def over_budget(peak_bytes: int, budget_bytes: int, chunk_frames: int) -> StageMemoryExceeded:
    """The start-up error for a warp whose chunk step cannot fit its region, with the figures."""
    return StageMemoryExceeded("liveportrait", peak_bytes, budget_bytes,
                               during=f"a {chunk_frames}-frame chunk step")
