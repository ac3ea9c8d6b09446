"""The dense-field machinery: grids line up with cv2.resize, and inverse maps are accurate."""

from __future__ import annotations

import numpy as np
import pytest

from stages.warp.mesh.field import Box, Grid, GridInverter


def _grid() -> Grid:
    return Grid.covering(100, 80, 300, 260, step=6, within=Box(0, 0, 512, 512))


def test_zero_field_inverts_to_the_identity_map():
    """With no displacement every box pixel maps to itself, edges included (no half-step clamp)."""
    grid = _grid()
    inverter = GridInverter(grid)
    fine = inverter.invert(np.zeros(grid.shape + (2,), np.float32))
    ys, xs = np.mgrid[grid.box.y0:grid.box.y0 + grid.box.h, grid.box.x0:grid.box.x0 + grid.box.w]
    assert np.abs(fine[..., 0] - xs).max() < 1e-3
    assert np.abs(fine[..., 1] - ys).max() < 1e-3


def test_inverse_map_undoes_a_smooth_forward_field():
    """For a smooth 12-px bump, moving each inverse-mapped pixel forward lands back on it."""
    grid = _grid()
    nodes = grid.nodes()
    centre = np.array([200.0, 170.0])

    def forward(points: np.ndarray) -> np.ndarray:
        r2 = ((points - centre) ** 2).sum(-1, keepdims=True)
        return 12.0 * np.exp(-r2 / (2 * 35.0**2)) * np.array([0.6, 0.8])

    inverter = GridInverter(grid, iterations=6)
    fine = inverter.invert(forward(nodes).astype(np.float32))
    ys, xs = np.mgrid[grid.box.y0:grid.box.y0 + grid.box.h, grid.box.x0:grid.box.x0 + grid.box.w]
    landed = fine + forward(fine.astype(np.float64))
    error = np.hypot(landed[..., 0] - xs, landed[..., 1] - ys)
    assert error.max() < 0.25  # bilinear upsampling of a 6-px grid, not the iteration, limits it
    assert np.median(error) < 0.05


def _bump(grid: Grid) -> np.ndarray:
    """A 10-px bump in the middle of the grid's box, zero well before its edges."""
    nodes = grid.nodes()
    centre = np.array([grid.box.x0 + grid.box.w / 2, grid.box.y0 + grid.box.h / 2])
    r2 = ((nodes - centre) ** 2).sum(-1, keepdims=True)
    return (10.0 * np.exp(-r2 / (2 * 18.0**2)) * np.array([0.8, -0.6])).astype(np.float32)


@pytest.mark.parametrize("step", [2, 3, 4, 6, 8])
def test_upsampling_part_of_the_box_gives_the_same_map_there(step):
    """invert(field, area) makes fine[area] exactly as inverting the whole box does."""
    grid = Grid.covering(100, 80, 300, 260, step=step, within=Box(0, 0, 512, 512))
    field = _bump(grid)
    whole = GridInverter(grid, iterations=6).invert(field).copy()
    h, w = grid.box.h, grid.box.w
    for area in [(slice(0, 7), slice(0, w)), (slice(37, 101), slice(13, 77)), (slice(h - 10, h), slice(w - 50, w))]:
        part = GridInverter(grid, iterations=6).invert(field, area)
        np.testing.assert_array_equal(part[area], whole[area])


def test_tiles_left_out_of_the_moving_ones_remap_to_the_source_pixels_exactly():
    """Where moving_tiles says a tile stays, remapping it gives the source bytes, so copying it
    instead changes nothing; the bump's own tiles are reported as moving."""
    import cv2

    grid = _grid()
    inverter = GridInverter(grid, iterations=6)
    fine = inverter.invert(_bump(grid))
    tiles = inverter.moving_tiles()
    assert tiles.shape == (grid.gh, grid.gw)
    assert 0 < np.count_nonzero(tiles) < tiles.size
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    warped = cv2.remap(image, fine, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    source = image[grid.box.slices]
    step = grid.step
    still = np.repeat(np.repeat(tiles == 0, step, axis=0), step, axis=1)
    np.testing.assert_array_equal(warped[still], source[still])
    assert not np.array_equal(warped[~still], source[~still])
