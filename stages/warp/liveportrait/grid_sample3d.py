"""Trilinear 5-D grid sampling from gathers and arithmetic, so ONNX runtimes and TensorRT can run it.

Equivalent to `torch.nn.functional.grid_sample(volume, grid, mode="bilinear",
padding_mode="zeros", align_corners=False)` on (N,C,D,H,W) volumes. TensorRT's grid-sample layer
is 2-D only and many ONNX runtimes lack a 5-D GridSample, so the sampler is spelled out:
per axis, the two neighbouring voxel indices and their linear weights; per corner (8 of them),
one row gather from the volume flattened channels-last to (N·D·H·W, C); a weighted sum.
Floor, Where, integer arithmetic, Gather, Mul and Add are supported everywhere.

The arithmetic follows torch's CPU kernel step for step (same unnormalisation, same weight
formulas, same corner order and accumulation), so float32 results agree to rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.errors import StageInputError

# Corner order of torch's 3-D sampler: z (top, bottom) outermost, then y (north, south), then
# x (west, east): tnw, tne, tsw, tse, bnw, bne, bsw, bse. Matching it keeps the float sum identical.
_CORNERS = tuple((z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1))


def _axis_neighbours(coord: torch.Tensor, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                               list[torch.Tensor]]:
    """For normalised coordinates along one axis of `size` voxels: ([lo, hi] indices, weights, in-range masks).

    align_corners=False puts voxel i's centre at (2i + 1)/size − 1, so the continuous index is
    ((coord + 1)·size − 1)/2. Out-of-range neighbours get index 0 and a False mask (zero padding
    is applied by the caller through the weights); NaN coordinates fail every comparison and are
    treated as out of range, as in torch.
    """
    pos = ((coord + 1) * size - 1) / 2
    lo = torch.floor(pos)
    hi = lo + 1
    # Weights written as torch writes them: (hi − pos) for the lower neighbour, (pos − lo) for the upper.
    weights = [hi - pos, pos - lo]
    masks = [(lo >= 0) & (lo <= size - 1), (hi >= 0) & (hi <= size - 1)]
    # Replace out-of-range positions before the integer cast, so huge or NaN coordinates cannot
    # overflow it and every gathered row exists.
    indices = [torch.where(ok, edge, torch.zeros_like(edge)).to(torch.int64) for edge, ok in zip((lo, hi), masks)]
    return indices, weights, masks


def check_shapes(volume: torch.Tensor, grid: torch.Tensor) -> None:
    """Raise StageInputError unless volume is (N,C,D,H,W) and grid is (N,D',H',W',3) with the same N."""
    if volume.dim() != 5:
        raise StageInputError("grid_sample3d.volume", "expected a 5-D (N,C,D,H,W) tensor", shape=tuple(volume.shape))
    if grid.dim() != 5 or grid.shape[-1] != 3:
        raise StageInputError("grid_sample3d.grid", "expected a (N,D,H,W,3) tensor of (x,y,z) coordinates",
                              shape=tuple(grid.shape))
    if grid.shape[0] != volume.shape[0]:
        raise StageInputError("grid_sample3d.grid", "batch differs from the volume's",
                              grid_batch=grid.shape[0], volume_batch=volume.shape[0])
    if not volume.is_floating_point():
        raise StageInputError("grid_sample3d.volume", "expected a floating-point tensor", dtype=str(volume.dtype))


def grid_sample3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample `volume` (N,C,D,H,W) at `grid` (N,D',H',W',3) → (N,C,D',H',W'), trilinear, zero padding.

    grid[..., 0] is x (along W), [..., 1] is y (along H), [..., 2] is z (along D), each in
    [−1, 1] with align_corners=False. Coordinates are computed in at least float32 (a half
    grid is promoted: fp16 cannot hold the voxel positions of a 64-wide axis finer than 1/32).
    """
    check_shapes(volume, grid)
    n, c, d, h, w = volume.shape
    out_shape = grid.shape[1:4]
    coord = grid.to(torch.promote_types(grid.dtype, torch.float32)).reshape(n, -1, 3)
    (xi, xw, xm), (yi, yw, ym), (zi, zw, zm) = (_axis_neighbours(coord[..., axis], size)
                                                 for axis, size in ((0, w), (1, h), (2, d)))

    # Channels-last rows: one gather per corner picks whole C-vectors with 1-D row indices.
    rows = volume.permute(0, 2, 3, 4, 1).reshape(n * d * h * w, c)
    row_base = (torch.arange(n, device=volume.device, dtype=torch.int64) * (d * h * w)).unsqueeze(1)

    out = None
    for cz, cy, cx in _CORNERS:
        index = row_base + (zi[cz] * h + yi[cy]) * w + xi[cx]
        weight = xw[cx] * yw[cy] * zw[cz]  # torch's product order: x, y, z
        weight = torch.where(xm[cx] & ym[cy] & zm[cz], weight, torch.zeros_like(weight))
        term = torch.index_select(rows, 0, index.reshape(-1)) * weight.reshape(-1, 1).to(volume.dtype)
        out = term if out is None else out + term
    return out.reshape(n, *out_shape, c).permute(0, 4, 1, 2, 3).contiguous()


class GridSample3d(nn.Module):
    """`grid_sample3d` as a module, so an exporter can attribute (and name) the nodes it emits."""

    def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Sample `volume` at `grid` (see `grid_sample3d`)."""
        return grid_sample3d(volume, grid)
