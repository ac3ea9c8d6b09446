"""The engine's failure policy in one place: what kind of fault ended a stage.

- `input`: the recipe itself is at fault (no face, unspeakable text): final, the slot is
  rejected and its deadline is not the daemon's to miss.
- `withdrawn`: the slot was cancelled or abandoned as late, or the daemon is stopping, and the
  stage noticed its cancel flag: not a failure of the stage.
- `transient`: anything else is the node's fault (disk full, out of memory, a crashed backend):
  the stage is tried again while attempts and the deadline allow (scheduler.on_stage_done).
"""

from __future__ import annotations

from typing import Literal

from stages.errors import StageInputError
from vortexd.recipe import RecipeError

FailureKind = Literal["input", "withdrawn", "transient"]


def classify(error: BaseException | None, cancel_requested: bool) -> FailureKind | None:
    """The kind of fault `error` is (None: the stage succeeded). `cancel_requested`: the slot's
    cancel flag was set while the stage ran."""
    if error is None:
        return None
    if isinstance(error, (StageInputError, RecipeError)):
        return "input"
    if cancel_requested and isinstance(error, InterruptedError):
        return "withdrawn"
    return "transient"


def describe(error: BaseException | None) -> str | None:
    """One line for the journal and the logs: the exception's type and message."""
    if error is None:
        return None
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
