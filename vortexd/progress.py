"""Human progress on a terminal: one redrawn line on a TTY, a line per stage otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR_WIDTH = 30


class ProgressPrinter:
    """A `Progress` callback that prints stage progress to `stream` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.is_tty = self.stream.isatty()
        self._started_s = time.perf_counter()
        self._last_stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Report that `done` of `total` units of `stage` are finished."""
        elapsed_s = time.perf_counter() - self._started_s
        if self.is_tty:
            filled = int(_BAR_WIDTH * done / max(total, 1))
            bar = "█" * filled + " " * (_BAR_WIDTH - filled)
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{stage:<7} ▕{bar}▏ {done}/{total}  {elapsed_s:5.1f} s{end}")
        elif done >= total or stage != self._last_stage:
            # Without a terminal, one line when a stage finishes keeps logs readable.
            if done >= total:
                self.stream.write(f"{stage:<7} done  {elapsed_s:6.2f} s\n")
        self._last_stage = stage
        self.stream.flush()
