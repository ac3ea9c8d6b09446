"""Per-stage accounting of memory a stage allocates outside its arena views.

On CUDA every region gets its own `torch.cuda.MemPool`; inside `with arena.stage_pool(region):`
the PyTorch caching allocator routes the *current thread's* allocations into that pool (weights a
backend loads itself, activations, cuDNN scratch), so the pool's live bytes are exactly what the
stage holds beyond its views. Enter the context in the thread that runs the stage's model work.

On the host there is no per-stage allocator to route through, so the stage pool carves views for
the stage and the stage's accounted memory is its views; `outside_bytes()` is then 0 by construction.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from vram.device import Device, import_torch_cuda
from vram.errors import DeviceUnavailable

if TYPE_CHECKING:
    from vram.arena import Arena


class StagePool:
    """The memory context of one stage: carve its views, route (on CUDA) and account its other allocations."""

    def __init__(self, arena: Arena, region: str) -> None:
        self.arena = arena
        self.region = region

    def view(self, shape: tuple[int, ...] | int, dtype: Any, name: str):
        """A typed view from this stage's region (same as `arena.view(region, ...)`)."""
        return self.arena.view(self.region, shape, dtype, name)

    def outside_bytes(self) -> int:
        """Bytes the stage holds outside its views; host allocations are not routed, so none."""
        return 0

    def __enter__(self) -> StagePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class CudaStagePool(StagePool):
    """A stage pool backed by one `torch.cuda.MemPool` per region (created once, reused on every entry)."""

    def __init__(self, arena: Arena, region: str, device: Device) -> None:
        super().__init__(arena, region)
        self._torch = import_torch_cuda(device)
        if not hasattr(self._torch.cuda, "MemPool") or not hasattr(self._torch.cuda, "use_mem_pool"):
            raise DeviceUnavailable(f"per-stage pools need torch.cuda.MemPool/use_mem_pool "
                                    f"(PyTorch >= 2.6); this is {self._torch.__version__}")
        self._device = device
        self._pool = self._torch.cuda.MemPool()
        # Each entering thread keeps its own stack of active contexts, since routing is per thread.
        self._active = threading.local()

    def outside_bytes(self) -> int:
        """Bytes in live tensors allocated through this region's MemPool."""
        return sum(int(segment["allocated_size"]) for segment in self._pool.snapshot())

    def reserved_bytes(self) -> int:
        """Bytes the caching allocator holds for this pool (live tensors plus cached free blocks)."""
        return sum(int(segment["total_size"]) for segment in self._pool.snapshot())

    def __enter__(self) -> CudaStagePool:
        context = self._torch.cuda.use_mem_pool(self._pool, device=self._device.index)
        context.__enter__()
        stack = getattr(self._active, "stack", None)
        if stack is None:
            stack = self._active.stack = []
        stack.append(context)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._active.stack.pop().__exit__(*exc_info)
