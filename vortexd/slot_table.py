"""The engine's slot records: every slot it is working on, plus a bounded memory of finished ones.

Iterating gives the live records (what the scheduler decides over); a retired record (final, no
stage running, deadline outcome counted) moves to the history, whose oldest entries are dropped
beyond `history_size` — the journal keeps every slot for good, so memory stays flat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from stages.errors import StageInputError
from vortexd.slot import Slot


class SlotTable:
    """Slot records by id (see the module docstring)."""

    def __init__(self, history_size: int = 256) -> None:
        if not isinstance(history_size, int) or history_size < 1:
            raise StageInputError("history_size", "must be an integer >= 1", value=history_size)
        self.history_size = history_size
        self._live: dict[str, Slot] = {}
        self._history: OrderedDict[str, Slot] = OrderedDict()

    def add(self, slot: Slot) -> Slot:
        """Take a new record; its id must be new and its seq a non-negative integer."""
        if not isinstance(slot.slot_id, str) or not slot.slot_id:
            raise StageInputError("slot_id", "must be a non-empty string", slot_id=slot.slot_id)
        if slot.slot_id in self._live or slot.slot_id in self._history:
            raise StageInputError("slot_id", "a slot with this id was already accepted", slot_id=slot.slot_id)
        if not isinstance(slot.seq, int) or isinstance(slot.seq, bool) or slot.seq < 0:
            raise StageInputError("seq", "must be a non-negative integer", seq=slot.seq)
        self._live[slot.slot_id] = slot
        return slot

    def get(self, slot_id: str) -> Slot:
        """The record of `slot_id`, live or remembered; StageInputError naming slot_id if unknown."""
        slot = self.find(slot_id)
        if slot is None:
            raise StageInputError("slot_id", "no such slot", slot_id=slot_id)
        return slot

    def find(self, slot_id: str) -> Slot | None:
        """The record of `slot_id`, or None."""
        if not isinstance(slot_id, str):
            return None
        return self._live.get(slot_id) or self._history.get(slot_id)

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    def everything(self) -> list[Slot]:
        """Live and remembered records, in seq order."""
        return sorted([*self._live.values(), *self._history.values()], key=lambda slot: slot.seq)

    def retire_finished(self) -> list[Slot]:
        """Move retired records to the history (dropping the oldest beyond its size); returns
        the records retired now."""
        retired = [slot for slot in self._live.values() if slot.retired]
        for slot in retired:
            del self._live[slot.slot_id]
            self._history[slot.slot_id] = slot
        while len(self._history) > self.history_size:
            self._history.popitem(last=False)
        return retired
