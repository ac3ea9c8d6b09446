"""Errors a stage raises for bad input: they name the field and the reason, never a traceback."""

from __future__ import annotations


class StageInputError(ValueError):
    """The input to a stage cannot be used. `field` names what was wrong (e.g. "actor.image")."""

    def __init__(self, field: str, message: str, **details: object) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.details = details


class NoFaceError(StageInputError):
    """The image holds no human face the face mesh can find."""
