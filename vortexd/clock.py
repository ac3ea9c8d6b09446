"""Clocks the scheduler reads: the real monotonic one, and a manual one tests move by hand."""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of seconds on a clock that never goes backwards."""

    def now_s(self) -> float:
        """The current time in seconds (only differences between readings are meaningful)."""
        ...


class MonotonicClock:
    """The process's monotonic clock: immune to wall-clock jumps (NTP, an operator's `date`)."""

    def now_s(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to, so a timeline can be replayed exactly in tests."""

    def __init__(self, start_s: float = 0.0) -> None:
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be finite, got {start_s!r}")
        self._now_s = float(start_s)

    def now_s(self) -> float:
        """The time the clock was last set to."""
        return self._now_s

    def advance(self, delta_s: float) -> float:
        """Move the clock forward by `delta_s` seconds and return the new time."""
        if not math.isfinite(delta_s) or delta_s < 0:
            # A monotonic clock cannot step back; a test that tries has a bug worth surfacing.
            raise ValueError(f"delta_s must be a finite, non-negative number, got {delta_s!r}")
        self._now_s += float(delta_s)
        return self._now_s

    def set(self, now_s: float) -> float:
        """Jump the clock to `now_s` (not earlier than the current time) and return it."""
        if not math.isfinite(now_s) or now_s < self._now_s:
            raise ValueError(f"now_s must be finite and >= {self._now_s}, got {now_s!r}")
        self._now_s = float(now_s)
        return self._now_s
