"""The arena plan: named regions with byte budgets, laid out at aligned offsets in one allocation.

Alignment is 256 bytes for every region start and every view carved inside a region. 256 B is the
alignment cudaMalloc guarantees and what cuBLAS/cuDNN kernels and CUDA-graph-captured tensors
expect for their fastest (vectorised, 128-bit) loads; it is also a multiple of every dtype size and
of a CPU cache line, so the same layout is right for host memory.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vram.errors import InvalidPlan

ALIGNMENT_BYTES = 256
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# Region names end up as Prometheus label values and in log lines: keep them plain identifiers.
_REGION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def align_up(n_bytes: int, alignment_bytes: int = ALIGNMENT_BYTES) -> int:
    """`n_bytes` rounded up to the next multiple of `alignment_bytes`."""
    return -(-n_bytes // alignment_bytes) * alignment_bytes


def slab_bytes(frames: int, height_px: int, width_px: int, channels: int = 3) -> int:
    """Bytes of one uint8 video slab of shape (frames, height, width, channels)."""
    for label, value in (("frames", frames), ("height_px", height_px), ("width_px", width_px),
                         ("channels", channels)):
        if value <= 0:
            raise InvalidPlan(f"slab {label} must be positive, got {value}")
    return frames * height_px * width_px * channels


def slab_region_bytes(count: int, frames: int, height_px: int, width_px: int) -> int:
    """Budget a region needs to hold `count` aligned uint8 RGB slabs of the given size."""
    if count <= 0:
        raise InvalidPlan(f"slab count must be positive, got {count}")
    return count * align_up(slab_bytes(frames, height_px, width_px))


VIEWS = "views"
"""A region carved from the arena's one allocation by named views (the video slabs)."""
POOL = "pool"
"""A model stage's region: its stage allocates weights and working memory through its stage pool
(a `torch.cuda.MemPool` on CUDA, an accounted tracker on the host), capped at the budget. Its bytes
are checked against the device with the plan but drawn on demand, not carved from the allocation:
reserving them in the allocation as well would make a GPU node pay for the stage twice."""


@dataclass(frozen=True)
class Region:
    """One named region of the arena: what it is for, how many bytes it may use, and its kind."""

    name: str
    budget_bytes: int
    description: str = ""
    kind: str = VIEWS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _REGION_NAME.match(self.name):
            raise InvalidPlan(f"region name {self.name!r} must match {_REGION_NAME.pattern} "
                              "(it is used as a metrics label)")
        if not isinstance(self.budget_bytes, int) or isinstance(self.budget_bytes, bool):
            raise InvalidPlan(f"region {self.name!r}: budget_bytes must be an int, got {self.budget_bytes!r}")
        if self.budget_bytes < 0:
            raise InvalidPlan(f"region {self.name!r}: budget_bytes must be >= 0, got {self.budget_bytes}")
        if self.kind not in (VIEWS, POOL):
            raise InvalidPlan(f"region {self.name!r}: kind must be {VIEWS!r} or {POOL!r}, got {self.kind!r}")

    @property
    def span_bytes(self) -> int:
        """Bytes the region occupies in the one allocation: its aligned budget (views), 0 (pool)."""
        return align_up(self.budget_bytes) if self.kind == VIEWS else 0


@dataclass(frozen=True)
class ArenaPlan:
    """Regions in arena order plus the headroom the device must keep free beside the arena.

    `headroom_bytes` is memory the plan does not own but needs free after the arena is allocated:
    on CUDA the context and cuDNN/cuBLAS workspaces; on CPU the interpreter and the non-model stages.
    """

    regions: tuple[Region, ...]
    headroom_bytes: int = 0
    _offsets: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regions = tuple(self.regions)
        if not regions:
            raise InvalidPlan("an arena plan needs at least one region")
        if not all(isinstance(r, Region) for r in regions):
            raise InvalidPlan("every entry of ArenaPlan.regions must be a Region")
        names = [r.name for r in regions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidPlan(f"duplicate region names: {', '.join(duplicates)}")
        if not isinstance(self.headroom_bytes, int) or self.headroom_bytes < 0:
            raise InvalidPlan(f"headroom_bytes must be an int >= 0, got {self.headroom_bytes!r}")
        offsets: dict[str, int] = {}
        cursor = 0
        for region in regions:
            offsets[region.name] = cursor
            cursor += region.span_bytes
        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "_offsets", MappingProxyType(offsets))

    @classmethod
    def from_budgets(cls, budgets_bytes: Mapping[str, int], headroom_bytes: int = 0,
                     pools: Collection[str] = ()) -> ArenaPlan:
        """A plan from `{region name: budget bytes}`, regions in the mapping's order; the names in
        `pools` are stage-pool regions, the others view regions."""
        return cls(tuple(Region(name, budget, kind=POOL if name in pools else VIEWS)
                         for name, budget in budgets_bytes.items()), headroom_bytes)

    @property
    def names(self) -> tuple[str, ...]:
        """Region names in arena order."""
        return tuple(r.name for r in self.regions)

    @property
    def total_bytes(self) -> int:
        """Size of the single arena allocation (the view regions, each aligned)."""
        return sum(r.span_bytes for r in self.regions)

    @property
    def pool_bytes(self) -> int:
        """What the stage-pool regions may draw beside the allocation (the sum of their budgets)."""
        return sum(r.budget_bytes for r in self.regions if r.kind == POOL)

    @property
    def required_bytes(self) -> int:
        """Free device memory the plan needs: the allocation, the stage pools' budgets, the headroom."""
        return self.total_bytes + self.pool_bytes + self.headroom_bytes

    def region(self, name: str) -> Region:
        """The region called `name` (KeyError when absent)."""
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)

    def offset_bytes(self, name: str) -> int:
        """Byte offset of region `name` from the start of the arena (a pool region: where it would
        start, and it spans 0 bytes)."""
        return self._offsets[name]


def reference_plan(*, slab_count: int = 2, frames: int = 1080, height_px: int = 512,
                   width_px: int = 512) -> ArenaPlan:
    """The reference GPU plan for one 24 GiB card running the real backends.

    The model regions are stage pools; the slabs are the one allocation. Budgets (weights at the
    precision the design names, plus activations at batch size):
    LivePortrait fp16 with TensorRT engines and CUDA-graph buffers 3.5 GiB; Flux-schnell nf4
    transformer + T5 + VAE 10 GiB; Kokoro-82M 0.5 GiB; CLIP ViT-B-32 + ViT-L-14 fp16 1.25 GiB;
    two 45 s video slabs; 1.5 GiB headroom for the CUDA context and library workspaces.
    """
    return ArenaPlan(
        regions=(
            Region("liveportrait", int(3.5 * GIB), "LivePortrait warp: weights, engines, graph buffers", POOL),
            Region("flux", 10 * GIB, "Flux-schnell image generation", POOL),
            Region("kokoro", 512 * MIB, "Kokoro-82M TTS", POOL),
            Region("clip", 1280 * MIB, "open_clip ViT-B-32 + ViT-L-14 verification", POOL),
            Region("video_slabs", slab_region_bytes(slab_count, frames, height_px, width_px),
                   f"{slab_count} x ({frames}, {height_px}, {width_px}, 3) uint8 video slabs"),
        ),
        headroom_bytes=int(1.5 * GIB),
    )
