"""Errors raised by the vram package: each carries the numbers a reader needs to act on it."""

from __future__ import annotations

from vram.units import format_bytes


class VramError(Exception):
    """Base class for every vram error."""


class InvalidPlan(VramError, ValueError):
    """An arena plan is malformed (bad region name, duplicate region, negative budget)."""


class InvalidDevice(VramError, ValueError):
    """A device string is not `cpu`, `cuda` or `cuda:N`."""


class DeviceUnavailable(VramError):
    """The requested device cannot be used here (no torch, no CUDA, no such GPU)."""


class ArenaDoesNotFit(VramError):
    """The plan needs more memory than the device has free; the message holds the whole budget table."""

    def __init__(self, message: str, *, device: str, required_bytes: int, capacity_bytes: int, table: str):
        super().__init__(message)
        self.device = device
        self.required_bytes = required_bytes
        self.capacity_bytes = capacity_bytes
        self.table = table


class UnknownRegion(VramError):
    """A region name that is not in the arena's plan."""

    def __init__(self, region: str, known: tuple[str, ...]):
        super().__init__(f"unknown arena region {region!r}; the plan has: {', '.join(known)}")
        self.region = region
        self.known = known


class RegionBudgetExceeded(VramError):
    """Carving a view would take a region past its budget."""

    def __init__(self, region: str, view_name: str, requested_bytes: int, budget_bytes: int, used_bytes: int):
        super().__init__(
            f"region {region!r} cannot fit view {view_name!r}: requested {format_bytes(requested_bytes)} "
            f"({requested_bytes} B), budget {format_bytes(budget_bytes)} ({budget_bytes} B), "
            f"used {format_bytes(used_bytes)} ({used_bytes} B), "
            f"free {format_bytes(budget_bytes - used_bytes)} ({budget_bytes - used_bytes} B)"
        )
        self.region = region
        self.view_name = view_name
        self.requested_bytes = requested_bytes
        self.budget_bytes = budget_bytes
        self.used_bytes = used_bytes


class StageMemoryExceeded(VramError):
    """A model stage took its pool region past the budget (or the device ran out while it allocated).

    Raised in the stage's own thread, at the allocation on the host and at the step's check on
    CUDA, so only that stage's call fails; what it allocated is freed as the error unwinds.
    """

    def __init__(self, region: str, used_bytes: int, budget_bytes: int, *, during: str = "", detail: str = ""):
        where = f" during {during}" if during else ""
        super().__init__(
            f"stage region {region!r} is over its budget{where}: {format_bytes(used_bytes)} ({used_bytes} B) "
            f"in use, budget {format_bytes(budget_bytes)} ({budget_bytes} B)" + (f"; {detail}" if detail else ""))
        self.region = region
        self.used_bytes = used_bytes
        self.budget_bytes = budget_bytes


class ViewConflict(VramError):
    """A view name is already carved in a region with a different shape or dtype."""


class ArenaClosed(VramError):
    """The arena was closed; it hands out no more views."""


class SlabPoolError(VramError):
    """Base class for slab-pool errors."""


class NoFreeSlab(SlabPoolError):
    """`lease_nowait` found no free slab (or others are already queued for one)."""


class SlabAlreadyLeased(SlabPoolError):
    """A slot asked for a second slab while it already holds or awaits one."""


class InvalidView(VramError, ValueError):
    """A view request with a bad name, shape or dtype."""
