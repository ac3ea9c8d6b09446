"""The one place W samples its 5-D volumes, with a switch to the gather-based sampler for export.

By default `sample_volume` is exactly `torch.nn.functional.grid_sample(..., mode="bilinear",
padding_mode="zeros", align_corners=False)`: eager PyTorch keeps its native kernel. Inside
`gather_sampling()` it calls `grid_sample3d` instead (or a given sampler, e.g. a registered
`GridSample3d` module so the exporter can name its nodes), which ONNX runtimes and TensorRT can
run. The switch is a context variable, so it affects only the thread (or asyncio task) that
entered it: a backend rendering on another thread keeps the native kernel while an export runs.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as nnf

from stages.warp.liveportrait.grid_sample3d import grid_sample3d

Sampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_SAMPLER: contextvars.ContextVar[Sampler | None] = contextvars.ContextVar("liveportrait_volume_sampler",
                                                                          default=None)


def sample_volume(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sample of (N,C,D,H,W) `volume` at (N,D',H',W',3) `grid`, zero padding, align_corners=False."""
    sampler = _SAMPLER.get()
    if sampler is not None:
        return sampler(volume, grid)
    return nnf.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def active_sampler() -> Sampler | None:
    """The sampler `sample_volume` uses in this context (None: torch's native grid_sample)."""
    return _SAMPLER.get()


@contextlib.contextmanager
def gather_sampling(sampler: Sampler = grid_sample3d) -> Iterator[None]:
    """Within the block, `sample_volume` calls `sampler` (by default `grid_sample3d`) in this context."""
    token = _SAMPLER.set(sampler)
    try:
        yield
    finally:
        _SAMPLER.reset(token)
