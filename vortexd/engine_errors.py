"""The slot engine's domain errors: what an operation refuses, in the engine's own words.

The control server's op table (ops.py) maps each to its wire error code; `vortexd render` and
tests see them as they are. Faults in a recipe itself stay `RecipeError` / `StageInputError`,
which name the field.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """An operation the engine refuses; `details` says what it refused about."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotServing(EngineError):
    """The engine takes no recipes now (starting up or draining)."""


class UnknownSlot(EngineError):
    """No slot with this id was ever accepted."""

    def __init__(self, slot_id: str) -> None:
        super().__init__(f"no slot {slot_id!r}", slot_id=slot_id)


class SlotAlreadyFinal(EngineError):
    """The slot already reached a final state (published, failed, late or cancelled)."""

    def __init__(self, slot_id: str, state: str) -> None:
        super().__init__(f"slot {slot_id!r} is already {state}", slot_id=slot_id, state=state)
