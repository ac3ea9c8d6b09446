"""The warp's shortcuts change no pixel: maps made in parts, rows a mouth side cannot reach left
out, the part of the head under the opaque mouth left undrawn."""

from __future__ import annotations

import numpy as np
import pytest

from stages.warp.mesh.field import Box, Grid, GridInverter, parts_around
from stages.warp.mesh.mouth import MouthCompositor
from tests.stages.warp.mesh.conftest import make_plan, new_slab


def _bump(grid: Grid) -> np.ndarray:
    """A 10-px bump in the middle of the grid's box, pushing down and right."""
    nodes = grid.nodes()
    centre = np.array([grid.box.x0 + grid.box.w / 2, grid.box.y0 + grid.box.h / 2])
    r2 = ((nodes - centre) ** 2).sum(-1, keepdims=True)
    return (10.0 * np.exp(-r2 / (2 * 18.0**2)) * np.array([0.6, 0.8])).astype(np.float32)


@pytest.mark.parametrize("step", [4, 6, 8])
def test_a_map_upsampled_in_parts_is_the_whole_areas_map(step):
    """invert(…, upsample=False) then upsample(part) gives, on each part, the map a whole
    invert gives there."""
    grid = Grid.covering(100, 80, 300, 260, step=step, within=Box(0, 0, 512, 512))
    field = _bump(grid)
    h, w = grid.box.h, grid.box.w
    area = (slice(5, h - 9), slice(3, w - 4))
    whole = GridInverter(grid, iterations=6).invert(field, area).copy()
    parts = GridInverter(grid, iterations=6)
    parts.invert(field, area, upsample=False)
    for part in [(slice(5, 40), slice(3, w - 4)), (slice(60, 61), slice(20, 90)), (slice(h - 30, h - 9), area[1])]:
        np.testing.assert_array_equal(parts.upsample(part)[part], whole[part])


@pytest.mark.parametrize("step", [4, 6, 8])
def test_the_rows_a_map_reaches_bound_every_pixel_of_the_row(step):
    """rows_reached's (lo, hi) for a row hold the y of every map pixel of the area in that row."""
    grid = Grid.covering(100, 80, 300, 260, step=step, within=Box(0, 0, 512, 512))
    inverter = GridInverter(grid, iterations=6, relax=0.55)
    area = (slice(17, 150), slice(8, 120))
    fine = inverter.invert(_bump(grid), area)
    lo, hi = inverter.rows_reached(area)
    ys = fine[area][..., 1]
    assert lo.shape == hi.shape == (ys.shape[0],)
    assert (ys.min(axis=1) >= lo).all() and (ys.max(axis=1) <= hi).all()
    assert (hi - lo).max() < 4 * step + 12  # a bound, not the whole frame


def test_the_parts_around_a_rectangle_cover_the_rest_once():
    """parts_around gives rows × cols less the skipped rectangle, each pixel once, whatever the
    overlap."""
    for skip in [None, (slice(10, 20), slice(5, 9)), (slice(0, 100), slice(0, 100)), (slice(25, 40), slice(2, 50)),
                 (slice(50, 60), slice(0, 3))]:
        count = np.zeros((40, 30), int)
        for r, c in parts_around(slice(4, 33), slice(3, 27), skip):
            count[r, c] += 1
        want = np.zeros((40, 30), int)
        want[4:33, 3:27] = 1
        if skip is not None:
            want[skip] = 0
        np.testing.assert_array_equal(count, want)


class _EveryRow(MouthCompositor):
    """The mouth without its shortcut: every side inverted, upsampled and remapped on every row
    of the active area."""

    def _live_rows(self, name: str, inverter, area: tuple[slice, slice]) -> slice:
        return area[0]


def test_leaving_out_the_rows_a_mouth_side_cannot_reach_changes_no_pixel(prepared):
    """Over a plan that opens, rounds, smiles and nods, the mouth drawn on its sides' live rows
    only is the mouth drawn on every row, byte for byte; and what lies under its opaque part
    beforehand (the head remap leaves it undrawn) never shows."""
    n = 24
    plan = make_plan(n, jaw_open=np.linspace(0.0, 1.2, n), lip_round=np.linspace(0, 1, n), smile=0.7,
                     head_pitch_deg=np.linspace(-10, 10, n), head_yaw_deg=np.linspace(8, -8, n),
                     lips_closed=(np.arange(n) % 7 == 3).astype(np.float32))
    slab = new_slab(n)
    prepared.render(plan, slice(0, n), slab)  # one block: its fields stay in prepared._current
    layers, reach = prepared._current.layers, prepared._current.reach
    fast = MouthCompositor(prepared.mouth_patch, prepared.image)
    every = _EveryRow(prepared.mouth_patch, prepared.image)
    box = prepared.mouth_patch.grid.box.slices
    noise = np.random.default_rng(3)
    for j in range(n):
        fields = [layers[k].fields[j] for k in ("upper", "lower", "teeth")]
        area = fast.active_area(reach[j])
        a, b, c = (slab[j][box].copy() for _ in range(3))
        fast.render(*fields, area, a)
        every.render(*fields, area, b)
        np.testing.assert_array_equal(a, b)
        opaque = fast.opaque_part(area)
        assert opaque is not None
        c[opaque] = noise.integers(0, 256, c[opaque].shape, dtype=np.uint8)
        fast.render(*fields, area, c)
        np.testing.assert_array_equal(c, a)
