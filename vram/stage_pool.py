"""A model stage's region: the memory context its weights and working memory come from.

    pool = arena.stage_pool("liveportrait")      # or make_stage_pool("liveportrait", budget, "cuda")
    with pool:                                   # in the thread that runs the stage's model work
        model = load(...); pool.adopt(model.state_dict().values())
        peak_bytes = pool.measure_peak(warm_up)
    pool.check("render")                         # StageMemoryExceeded when over the budget

On CUDA the region is a `torch.cuda.MemPool`: inside `with pool:` the caching allocator routes the
entering thread's allocations into it (and the thread's kernels onto the stage's own stream), so
the pool's bytes are exactly what the stage holds. On the host a dispatch-mode ledger counts the
same allocations and refuses the one that crosses the budget (see `_host_tracker`). Entering is
per thread and re-entrant; torch is imported on first entry, not when the pool is made.
"""

from __future__ import annotations

import abc
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from vram._host_tracker import HostLedger, adopt, make_tracking_mode
from vram.device import Device, import_torch_cuda, parse_device
from vram.errors import DeviceUnavailable, StageMemoryExceeded


class StagePool(abc.ABC):
    """What every stage pool offers: routing (`with pool:`), use, peak, and the budget check.
    The host and CUDA pools below say how each is measured."""

    def __init__(self, region: str, budget_bytes: int) -> None:
        self.region = region
        self.budget_bytes = budget_bytes
        self._entered = threading.local()  # per thread: the stack of contexts this pool pushed

    @abc.abstractmethod
    def used_bytes(self) -> int:
        """Bytes the stage holds in its region now."""

    @abc.abstractmethod
    def peak_bytes(self) -> int:
        """The highest use seen since the last `reset_peak` (or since the pool was made)."""

    @abc.abstractmethod
    def reset_peak(self) -> None:
        """Start a new peak measurement from the use now."""

    @abc.abstractmethod
    def measure_peak(self, step: Callable[[], Any]) -> int:
        """Run `step()` inside the pool and return the region's peak while it ran (resident bytes included)."""

    def adopt(self, tensors: Iterable[Any]) -> None:
        """Charge tensors the stage made without an operator (e.g. weights read from disk). Nothing
        to do where the allocator itself routes every allocation (CUDA); the host ledger overrides it."""

    def check(self, during: str = "") -> None:
        """Raise StageMemoryExceeded, with the figures, when the region holds more than its budget."""
        used_bytes = self.used_bytes()
        if used_bytes > self.budget_bytes:
            raise StageMemoryExceeded(self.region, used_bytes, self.budget_bytes, during=during)

    @abc.abstractmethod
    def _contexts(self) -> list:
        """The context managers that route the entering thread's allocations into this region."""

    def __enter__(self) -> StagePool:
        stack = getattr(self._entered, "stack", None)
        if stack is None:
            stack = self._entered.stack = []
        # Re-entry in the same thread (prepare inside render, say) routes nothing new.
        contexts = self._contexts() if not stack else []
        for context in contexts:
            context.__enter__()
        stack.append(contexts)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for context in reversed(self._entered.stack.pop()):
            context.__exit__(exc_type, exc, tb)
        if isinstance(exc, StageMemoryExceeded) or _is_out_of_memory(exc):
            # The traceback keeps the failed call's frames, and with them every tensor it made,
            # alive for as long as someone holds the error: let go of them now, so the region is
            # back to what the stage held before the call (frames still running are skipped).
            traceback.clear_frames(tb)


def _is_out_of_memory(exc: BaseException | None) -> bool:
    return type(exc).__name__ == "OutOfMemoryError"  # torch's, without importing torch here


class HostStagePool(StagePool):
    """A host region: the entering thread's new CPU tensors are counted, and capped at the budget."""

    def __init__(self, region: str, budget_bytes: int) -> None:
        super().__init__(region, budget_bytes)
        self._ledger = HostLedger(region, budget_bytes)

    def used_bytes(self) -> int:
        """Bytes in live CPU storages charged to this region."""
        return self._ledger.used_bytes

    def peak_bytes(self) -> int:
        """The ledger's high-water mark."""
        return self._ledger.peak_bytes

    def reset_peak(self) -> None:
        """Start the high-water mark again from what is live now."""
        self._ledger.reset_peak()

    def measure_peak(self, step: Callable[[], Any]) -> int:
        """`step()` under the ledger; its high-water mark."""
        self.reset_peak()
        with self:
            step()
        return self.peak_bytes()

    def adopt(self, tensors: Iterable[Any]) -> None:
        """Charge CPU tensors made without an operator (each storage once)."""
        adopt(self._ledger, tensors)

    def _contexts(self) -> list:
        return [make_tracking_mode(self._ledger)]


class CudaStagePool(StagePool):
    """A CUDA region: one `torch.cuda.MemPool` and one stream, both reused on every entry."""

    def __init__(self, region: str, budget_bytes: int, device: Device, *, high_priority: bool = False) -> None:
        super().__init__(region, budget_bytes)
        self._torch = torch = import_torch_cuda(device)
        if not hasattr(torch.cuda, "MemPool") or not hasattr(torch.cuda, "use_mem_pool"):
            raise DeviceUnavailable(f"per-stage pools need torch.cuda.MemPool/use_mem_pool "
                                    f"(PyTorch >= 2.6); this is {torch.__version__}")
        self._device = device
        self.pool = torch.cuda.MemPool()
        # Lower number = higher priority: the warp's kernels go first when stages overlap.
        low, high = torch.cuda.Stream.priority_range() if hasattr(torch.cuda.Stream, "priority_range") else (0, 0)
        self.stream = torch.cuda.Stream(device=device.index, priority=high if high_priority else low)
        self._peak_bytes = 0

    def _sizes(self) -> tuple[int, int]:
        """(live bytes, bytes held) of the pool's segments, from one snapshot."""
        segments = self.pool.snapshot()
        return (sum(int(s["allocated_size"]) for s in segments), sum(int(s["total_size"]) for s in segments))

    def used_bytes(self) -> int:
        """Bytes in live tensors allocated through this region's MemPool."""
        return self._sizes()[0]

    def reserved_bytes(self) -> int:
        """Bytes the caching allocator holds for this pool (live tensors plus cached free blocks)."""
        return self._sizes()[1]

    def peak_bytes(self) -> int:
        """The highest use measured by `measure_peak` or seen by `check`."""
        return max(self._peak_bytes, self.used_bytes())

    def reset_peak(self) -> None:
        """Start the high-water mark again from what is live now."""
        self._peak_bytes = self.used_bytes()

    def measure_peak(self, step: Callable[[], Any]) -> int:
        """`step()` in the pool; resident bytes plus the device's allocation peak above them while
        it ran (the device counter is the only peak CUDA keeps; nothing else runs at warm-up)."""
        cuda = self._torch.cuda
        cuda.synchronize(self._device.index)
        cuda.reset_peak_memory_stats(self._device.index)
        resident_bytes, device_before = self.used_bytes(), cuda.memory_allocated(self._device.index)
        with self:
            step()
        cuda.synchronize(self._device.index)
        peak = resident_bytes + cuda.max_memory_allocated(self._device.index) - device_before
        self._peak_bytes = max(self._peak_bytes, peak)
        return peak

    def check(self, during: str = "") -> None:
        """Over budget when the pool *holds* more than the budget; cached free blocks are handed
        back first, so only memory the stage really needs counts against it."""
        used_bytes, held_bytes = self._sizes()
        if held_bytes > self.budget_bytes:
            self._torch.cuda.synchronize(self._device.index)
            self._torch.cuda.empty_cache()
            used_bytes, held_bytes = self._sizes()
        self._peak_bytes = max(self._peak_bytes, used_bytes)
        if held_bytes > self.budget_bytes:
            raise StageMemoryExceeded(self.region, held_bytes, self.budget_bytes, during=during)

    def _contexts(self) -> list:
        cuda = self._torch.cuda
        return [cuda.use_mem_pool(self.pool, device=self._device.index), cuda.stream(self.stream)]


def make_stage_pool(region: str, budget_bytes: int, device: str | Device = "cpu", *,
                    high_priority: bool = False) -> StagePool:
    """The stage pool for `device`: a MemPool and a stream on CUDA (the warp's at high priority), a
    ledger on the host. Stages used outside the daemon make their own this way."""
    parsed = parse_device(str(device))
    if parsed.is_cuda:
        return CudaStagePool(region, budget_bytes, parsed, high_priority=high_priority)
    return HostStagePool(region, budget_bytes)
