"""The chunk engine: W → G → paste-back for a chunk of frames, static buffers in and out.

Every tensor the chunk step reads or writes lives in a buffer allocated once: the actor's
feature volume f_s and keypoints x_s, the paste-back grid, mask and background, the chunk's
driving keypoints (input) and its uint8 frames (output). An actor is *bound* by copying its
tensors into those buffers, so the buffers keep their addresses — which is what lets one CUDA
graph serve every actor.

On CUDA the step runs under fp16 autocast (as the official inference does) and is captured once
as a CUDA graph, then replayed per chunk; on the CPU it runs eagerly in fp32. Otherwise the code
path is the same: load keypoints → step → copy frames out. The step always renders a whole chunk
(the graph has one shape); callers pad a partial chunk and keep only the rows they asked for.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import structlog
import torch

from stages.errors import StageInputError
from stages.warp.liveportrait.pasteback import PasteMaps, paste
from stages.warp.liveportrait.spade import SPADEDecoder
from stages.warp.liveportrait.warping import WarpingNetwork

log = structlog.get_logger("vortex.warp.liveportrait")

GRAPH_WARMUP_STEPS = 3
"""Eager steps on a side stream before capture (cuDNN picks its algorithms, the allocator settles)."""


@dataclass(frozen=True)
class EngineOptions:
    """How the chunk step runs."""

    chunk_frames: int = 8
    half: bool = False  # fp16 autocast (CUDA; allowed on the CPU, slowly, for tests)
    cuda_graph: bool = False  # capture the step once, replay it per chunk (CUDA)
    compile: bool = False  # torch.compile W and G before the first step (inside the graph on CUDA)

    @classmethod
    def for_device(cls, device: torch.device, chunk_frames: int, cuda_graph: bool = True,
                   compile: bool = True) -> "EngineOptions":
        """fp16 + compiled W and G + CUDA graph on CUDA, fp32 eager elsewhere."""
        on_cuda = device.type == "cuda"
        return cls(chunk_frames=chunk_frames, half=on_cuda, cuda_graph=on_cuda and cuda_graph,
                   compile=on_cuda and compile)


@dataclass(frozen=True)
class BoundSource:
    """One actor's tensors for the engine (on the engine's device)."""

    f_s: torch.Tensor  # (1, C, D, H, W)
    x_s: torch.Tensor  # (1, K, 3)
    maps: PasteMaps


class ChunkEngine:
    """Batched W+G+paste over fixed-size chunks into preallocated buffers (one actor bound at a time)."""

    def __init__(self, warping: WarpingNetwork, spade: SPADEDecoder, device: torch.device,
                 feature_shape: tuple[int, ...], num_kp: int, frame_shape: tuple[int, int],
                 options: EngineOptions, graph_pool: object = None) -> None:
        """`graph_pool`: the id of the MemPool the CUDA graph's memory comes from (the stage's
        region), or None for a private pool of its own."""
        if options.chunk_frames < 1:
            raise StageInputError("warp.chunk_frames", "must be at least 1", chunk_frames=options.chunk_frames)
        if options.cuda_graph and device.type != "cuda":
            raise StageInputError("warp.device", "CUDA graphs need a CUDA device", device=str(device))
        self.warping, self.spade = warping, spade
        # What the step calls: the compiled modules (compiled lazily, at the first step), or the
        # modules themselves. The fp32 re-render of a non-finite chunk always runs the modules.
        self._nets = ((torch.compile(warping, dynamic=False), torch.compile(spade, dynamic=False))
                      if options.compile else (warping, spade))
        self.device, self.options, self._graph_pool = device, options, graph_pool
        b, (h, w) = options.chunk_frames, frame_shape
        with torch.inference_mode():
            self.f_s = torch.zeros((1, *feature_shape), device=device)
            self.x_s = torch.zeros((1, num_kp, 3), device=device)
            self.kp_driving = torch.zeros((b, num_kp, 3), device=device)
            self.grid = torch.zeros((1, h, w, 2), device=device)
            self.mask = torch.zeros((1, 1, h, w), device=device)
            self.background = torch.zeros((1, 3, h, w), device=device)
            self.frames = torch.zeros((b, h, w, 3), dtype=torch.uint8, device=device)
            self.finite = torch.ones((), dtype=torch.bool, device=device)
        # Device → host goes through pinned memory on CUDA (asynchronous DMA); on the CPU the
        # output buffer is already host memory.
        self.host = (torch.empty_like(self.frames, device="cpu").pin_memory() if device.type == "cuda"
                     else self.frames)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._bound: BoundSource | None = None
        self.fp32_rerenders = 0
        """Chunks whose fp16 render was not finite and were rendered again in fp32."""
        self.lock = threading.Lock()
        """Held by callers around bind + run: the buffers belong to one render at a time."""

    @property
    def chunk_frames(self) -> int:
        """Frames per step."""
        return self.options.chunk_frames

    def bind(self, source: BoundSource) -> None:
        """Copy an actor's tensors into the static buffers (no-op when it is already bound)."""
        if self._bound is source:
            return
        with torch.inference_mode():
            self.f_s.copy_(source.f_s)
            self.x_s.copy_(source.x_s)
            self.grid.copy_(torch.from_numpy(source.maps.grid)[None])
            self.mask.copy_(torch.from_numpy(source.maps.mask)[None, None])
            self.background.copy_(torch.from_numpy(source.maps.background).permute(2, 0, 1)[None])
        self._bound = source

    def _step(self) -> None:
        """W → G → paste on the whole chunk buffer (what the CUDA graph captures)."""
        # Graph capture needs the autocast weight cache off: cached casts would be freed after capture.
        precision = (torch.autocast(self.device.type, dtype=torch.float16, cache_enabled=False)
                     if self.options.half else contextlib.nullcontext())
        with precision:
            self._render(*self._nets)

    def _render(self, warping: torch.nn.Module, spade: torch.nn.Module) -> None:
        """W → G → paste with the given modules; records whether W's and G's outputs were finite."""
        b = self.kp_driving.shape[0]
        warped = warping(self.f_s.expand(b, -1, -1, -1, -1), kp_driving=self.kp_driving,
                         kp_source=self.x_s.expand(b, -1, -1))["out"]
        images = spade(warped)
        # fp16 overflows show as inf/NaN in W's output or G's image (a black face once pasted).
        self.finite.copy_(torch.isfinite(warped).all() & torch.isfinite(images).all())
        paste(images, self.grid, self.mask, self.background, self.frames)

    def _capture(self) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            self._step()
        self._graph = graph

    def step(self) -> None:
        """Run the chunk step once on the current buffers (replaying the CUDA graph when enabled)."""
        with torch.inference_mode():
            if not self.options.cuda_graph:
                self._step()
                return
            if self._graph is None:
                self._capture()
            self._graph.replay()

    def run_chunk(self, kp_driving: torch.Tensor, rows: slice, out: np.ndarray) -> None:
        """Render one whole chunk for `kp_driving` (chunk_frames, K, 3); copy its `rows` into `out`.

        Callers pass whole chunks, padded as they see fit: the step has one shape, and a frame
        at a given row of a given chunk then always sees the same kernels (see backend.py).
        A chunk whose fp16 render is not finite is rendered again in fp32 (counted, logged once).
        """
        if self._bound is None:
            raise RuntimeError("no actor bound to the engine")
        if kp_driving.shape != self.kp_driving.shape:
            raise ValueError(f"expected a whole chunk of keypoints {tuple(self.kp_driving.shape)}, "
                             f"got {tuple(kp_driving.shape)}")
        with torch.inference_mode():
            self.kp_driving.copy_(kp_driving)
            self.step()
            if self.options.half and not bool(self.finite):
                self._rerender_fp32()
            if self.host is not self.frames:
                self.host.copy_(self.frames, non_blocking=True)
                torch.cuda.current_stream(self.device).synchronize()
            np.copyto(out, self.host[rows].numpy())

    def _rerender_fp32(self) -> None:
        """The current chunk again, eagerly in fp32 with the uncompiled modules (outside any graph)."""
        if self.fp32_rerenders == 0:
            log.warning("liveportrait_fp16_not_finite", action="chunk rendered again in fp32",
                        chunk_frames=self.chunk_frames, device=str(self.device))
        self.fp32_rerenders += 1
        self._render(self.warping, self.spade)
