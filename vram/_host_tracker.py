"""Host-side accounting of the PyTorch memory one stage allocates: live bytes, peak, and a hard cap.

The host has no per-stage allocator to route through, so the stage's threads run under a
`TorchDispatchMode` (thread-local, like `torch.cuda.use_mem_pool`) that sees every operator's
outputs. An output whose storage is not one of the operator's inputs is a new allocation: its
bytes are added to the ledger and taken off again when the storage is freed (a weakref finalizer,
which runs in whichever thread drops the last reference). Tensors made without an operator (a
checkpoint loaded from disk, `torch.from_numpy`) are charged explicitly with `adopt`.

An allocation that takes the ledger past its budget raises `StageMemoryExceeded` in the allocating
thread: the tensor is dropped as the error unwinds, so only that call fails and the ledger returns
to what the stage held before it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

from vram.errors import StageMemoryExceeded


class HostLedger:
    """Live and peak bytes of the storages charged to one region, with its budget. Thread-safe."""

    def __init__(self, region: str, budget_bytes: int) -> None:
        self.region = region
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._live: dict[int, int] = {}  # storage data pointer -> bytes
        self.used_bytes = 0
        self.peak_bytes = 0

    def charge(self, storage: Any, *, enforce: bool) -> None:
        """Count `storage` (once) until it is freed; over the budget with `enforce`, raise."""
        n_bytes = storage.nbytes()
        address = storage.data_ptr()
        if n_bytes == 0 or address == 0:
            return
        with self._lock:
            if address in self._live:
                return
            self._live[address] = n_bytes
            self.used_bytes += n_bytes
            used_bytes = self.used_bytes
            refused = enforce and used_bytes > self.budget_bytes
            if not refused:  # a refused allocation is gone as the error unwinds: it never counts
                self.peak_bytes = max(self.peak_bytes, used_bytes)
        weakref.finalize(storage, self._release, address)
        if refused:
            raise StageMemoryExceeded(self.region, used_bytes, self.budget_bytes,
                                      detail=f"the allocation that crossed it was {n_bytes} B")

    def _release(self, address: int) -> None:
        with self._lock:
            self.used_bytes -= self._live.pop(address, 0)

    def reset_peak(self) -> None:
        """Start a new peak measurement from what is live now."""
        with self._lock:
            self.peak_bytes = self.used_bytes


def _storages(tensors: Iterable[Any], torch: Any) -> Iterable[Any]:
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
            yield tensor.untyped_storage()


def make_tracking_mode(ledger: HostLedger):
    """A fresh dispatch mode that charges every new CPU storage made in the entering thread to `ledger`."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class _TrackingMode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            inputs = {s.data_ptr() for s in _storages(tree_leaves((args, kwargs)), torch)}
            for storage in _storages(tree_leaves(out), torch):
                if storage.data_ptr() not in inputs:
                    ledger.charge(storage, enforce=True)
            return out

    return _TrackingMode()


def adopt(ledger: HostLedger, tensors: Iterable[Any]) -> None:
    """Charge `tensors`' CPU storages made outside any operator (loaded weights); no cap is enforced
    here, since the caller checks the total once loading is done."""
    import torch

    for storage in _storages(tensors, torch):
        ledger.charge(storage, enforce=False)
