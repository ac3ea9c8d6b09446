"""How a model stage lives in its arena region (vram.StagePool): load into it, run inside it.

    judge = load_in_region(memory, lambda: load_models(...), lambda loaded: loaded.values())
    with in_region(memory):
        scores = judge.score(...)

`memory` is None when a stage runs outside the daemon without a region (a script, a test): then
nothing is routed or counted and the stage behaves as a plain PyTorch program.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from vram import StagePool

Loaded = TypeVar("Loaded")


def in_region(memory: StagePool | None) -> contextlib.AbstractContextManager:
    """The stage's region as a context (routes and counts this thread's allocations), or nothing."""
    return memory if memory is not None else contextlib.nullcontext()


def load_in_region(memory: StagePool | None, load: Callable[[], Loaded],
                   modules: Callable[[Loaded], Iterable[Any]]) -> Loaded:
    """`load()` inside the region, its modules' weights charged to it (also those read from disk
    without an operator), then checked: weights that do not fit refuse here, naming the region."""
    with in_region(memory):
        loaded = load()
    if memory is not None:
        memory.adopt(tensor for module in modules(loaded) for tensor in module.state_dict().values())
        memory.check("load")
    return loaded
