"""Control displacements → a dense, invertible displacement field over a box of the frame.

A `Grid` is a coarse lattice of nodes over a rectangular box. Node i sits at pixel
x0 + step·i + (step − 1)/2, which is exactly where cv2.resize (INTER_LINEAR, half-pixel
centres) puts it when the node array is upsampled by `step`: one resize turns a coarse map into
the full-resolution map with no offset error.

Fields are *forward* (a source pixel p goes to p + d(p)); cv2.remap needs the *inverse* (for an
output pixel q, which source pixel lands there). `GridInverter` finds it on the coarse nodes by
fixed-point iteration s ← q − d(s), which converges because every field we build is smooth
(|∇d| below ~0.5 where it matters: head-pose features are capped to keep it so) on the part of
the face it is used for; discontinuities (lips parting, a lid sliding over the eye) are never
put into one field but handled by layers (mouth.py, eyes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """A pixel rectangle [x0, x0 + w) × [y0, y0 + h) of the frame."""

    x0: int
    y0: int
    w: int
    h: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the box in a frame array."""
        return slice(self.y0, self.y0 + self.h), slice(self.x0, self.x0 + self.w)

    def pixel_centres(self) -> np.ndarray:
        """(h, w, 2) float64 (x, y) coordinates of every pixel in the box."""
        ys, xs = np.mgrid[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]
        return np.stack([xs, ys], axis=-1).astype(np.float64)

    def moved_within(self, dx: int, dy: int, outer: "Box") -> "Box":
        """This box moved by (dx, dy) pixels, as far as it stays inside `outer` (which holds it)."""
        x0 = int(np.clip(self.x0 + dx, outer.x0, outer.x0 + outer.w - self.w))
        y0 = int(np.clip(self.y0 + dy, outer.y0, outer.y0 + outer.h - self.h))
        return Box(x0, y0, self.w, self.h)


@dataclass(frozen=True)
class Grid:
    """A coarse node lattice over `box`; box.w = step·gw and box.h = step·gh exactly.

    The lattice carries one extra ring of nodes outside the box, so every pixel of the box is
    interpolated between nodes (cv2.resize would otherwise clamp the outermost half-step).
    """

    box: Box
    step: int
    gw: int
    gh: int

    @classmethod
    def covering(cls, x0: float, y0: float, x1: float, y1: float, step: int, within: Box) -> "Grid":
        """The smallest step-aligned grid inside `within` that covers [x0, x1) × [y0, y1).

        When `within` is too small for the request, the grid is as large as fits.
        """
        def span(lo: float, hi: float, lim_lo: int, lim_len: int) -> tuple[int, int]:
            """(start, node count) along one axis, centred on the request, inside the limit."""
            lo_i = int(np.clip(np.floor(lo), lim_lo, lim_lo + lim_len))
            hi_i = int(np.clip(np.ceil(hi), lo_i, lim_lo + lim_len))
            n = int(np.clip(np.ceil((hi_i - lo_i) / step), 2, max(2, lim_len // step)))
            start = lo_i - (n * step - (hi_i - lo_i)) // 2
            start = int(np.clip(start, lim_lo, max(lim_lo, lim_lo + lim_len - n * step)))
            return start, n

        bx, gw = span(x0, x1, within.x0, within.w)
        by, gh = span(y0, y1, within.y0, within.h)
        return cls(Box(bx, by, gw * step, gh * step), step, gw, gh)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the node lattice, the outer ring included."""
        return self.gh + 2, self.gw + 2

    @property
    def origin_px(self) -> tuple[float, float]:
        """Image position (x, y) of node (0, 0), the outer ring's corner."""
        half = (self.step - 1) / 2.0
        return self.box.x0 - self.step + half, self.box.y0 - self.step + half

    def nodes(self) -> np.ndarray:
        """(rows, cols, 2) float64 pixel positions (x, y) of the nodes."""
        ox, oy = self.origin_px
        rows, cols = self.shape
        gx, gy = np.meshgrid(ox + self.step * np.arange(cols), oy + self.step * np.arange(rows))
        return np.stack([gx, gy], axis=-1)

    def displacement_at(self, field_px: np.ndarray, point_px: np.ndarray) -> np.ndarray:
        """(dx, dy): node field `field_px` (rows, cols, 2) at frame point `point_px`, bilinearly."""
        ox, oy = self.origin_px
        rows, cols = self.shape
        fx = float(np.clip((point_px[0] - ox) / self.step, 0.0, cols - 1.0))
        fy = float(np.clip((point_px[1] - oy) / self.step, 0.0, rows - 1.0))
        i, j = min(int(fx), cols - 2), min(int(fy), rows - 2)
        ax, ay = fx - i, fy - j
        top = (1.0 - ax) * field_px[j, i] + ax * field_px[j, i + 1]
        bottom = (1.0 - ax) * field_px[j + 1, i] + ax * field_px[j + 1, i + 1]
        return (1.0 - ay) * top + ay * bottom

    @property
    def n_nodes(self) -> int:
        """Number of nodes, the outer ring included."""
        return self.shape[0] * self.shape[1]


def parts_around(rows: slice, cols: slice, skip: tuple[slice, slice] | None) -> list[tuple[slice, slice]]:
    """The non-empty parts of rows × cols that lie outside the rectangle `skip` (all of it
    when `skip` is None): the rows above and below it, and left and right of it beside it."""
    if skip is None or cols.start >= cols.stop:
        return [(rows, cols)] if cols.start < cols.stop else []
    (sr0, sr1), (sc0, sc1) = (skip[0].start, skip[0].stop), (skip[1].start, skip[1].stop)
    mid0, mid1 = max(rows.start, sr0), min(rows.stop, sr1)
    if mid0 >= mid1 or sc0 >= cols.stop or sc1 <= cols.start:
        return [(rows, cols)]
    parts = [(slice(rows.start, mid0), cols), (slice(mid1, rows.stop), cols),
             (slice(mid0, mid1), slice(cols.start, max(cols.start, sc0))),
             (slice(mid0, mid1), slice(min(cols.stop, sc1), cols.stop))]
    return [(r, c) for r, c in parts if r.start < r.stop and c.start < c.stop]


def gaussian_rbf_weights(nodes_px: np.ndarray, controls_px: np.ndarray, sigma_px: float,
                         ridge: float = 1e-3) -> np.ndarray:
    """(n_nodes, n_controls) matrix W so that W @ values interpolates control values at nodes.

    Gaussian radial basis with a small ridge: exact enough at the controls, no ringing between
    close ones, and it decays to zero a few sigma away from every control — which is what a
    local expression should do.
    """
    inv2s2 = 1.0 / (2.0 * sigma_px * sigma_px)
    k_cc = np.exp(-squared_distances(controls_px, controls_px) * inv2s2)
    k_cc[np.diag_indices_from(k_cc)] += ridge
    k_qc = np.exp(-squared_distances(nodes_px, controls_px) * inv2s2)
    # Solve from the right: W = K_qc · K_cc⁻¹ (K_cc is symmetric positive definite).
    return np.linalg.solve(k_cc, k_qc.T).T


def normalized_gaussian_weights(nodes_px: np.ndarray, controls_px: np.ndarray, sigma_px: float,
                                floor: float = 0.05) -> np.ndarray:
    """(n_nodes, n_controls) normalised Gaussian weights (Nadaraya–Watson), fading far away.

    Each node's value is a weighted mean of nearby control values, so the field never
    overshoots the data (no ringing, bounded gradients) — the right trade for the whole-face
    field, where smoothness matters more than hitting every control exactly. `floor` is added
    to the weight sum: where controls are sparse (beyond the face) the field fades to zero.
    """
    w = np.exp(-squared_distances(nodes_px, controls_px) / (2.0 * sigma_px * sigma_px))
    return w / (w.sum(axis=1, keepdims=True) + floor)


def squared_distances(a_px: np.ndarray, b_px: np.ndarray) -> np.ndarray:
    """(n_a, n_b) squared distances between point sets (..., 2), via one matmul."""
    a = np.asarray(a_px, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b_px, dtype=np.float64).reshape(-1, 2)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


class GridInverter:
    """Turns one frame's forward node field into the full-resolution inverse map of its box.

    All buffers are allocated here, once; `invert` only writes into them.
    """

    def __init__(self, grid: Grid, iterations: int = 3, relax: float = 1.0,
                 extra_iterations: int = 0, tolerance_px: float = 0.1) -> None:
        """`relax` < 1 damps each step (s ← s + relax·(q − d(s) − s)): needed where a field
        stretches the picture (|∇d| near or above 1, e.g. lips closing over a gap), where the
        plain iteration would oscillate instead of converging.

        `extra_iterations` (undamped only): after the fixed `iterations`, up to this many more,
        when `invert` is asked to converge, while a step still moves some node by more than
        `tolerance_px` — where the field is steep (a strong head turn) the plain steps close the
        gap slowly, and a fixed count that suits every frame would be paid on every frame."""
        self.grid = grid
        self.iterations = iterations
        self.relax = relax
        self.extra_iterations = extra_iterations if relax == 1.0 else 0
        self._tolerance_nodes = tolerance_px / grid.step
        rows, cols = grid.shape
        jj, ii = np.mgrid[0:rows, 0:cols]
        self._ident = np.ascontiguousarray(np.stack([ii, jj], -1), dtype=np.float32)
        # The nodes' own pixel offset, whole (adding a 2-vector would broadcast node by node).
        self._origin = np.ascontiguousarray(np.broadcast_to(np.array(grid.origin_px, np.float32), (rows, cols, 2)))
        self._d_idx = np.empty((rows, cols, 2), np.float32)
        self._s_idx = np.empty((rows, cols, 2), np.float32)
        self._ident_px = np.ascontiguousarray(self._ident * float(grid.step) + self._origin, dtype=np.float32)
        self._moved = np.empty((rows, cols), np.float32)
        self._moving = np.empty((rows, cols), np.uint8)
        self._kernel = np.ones((3, 3), np.uint8)
        self._sampled = np.empty((rows, cols, 2), np.float32)
        s = grid.step
        self._fine_all = np.empty((rows * s, cols * s, 2), np.float32)
        self.fine = self._fine_all[s:s + grid.box.h, s:s + grid.box.w]
        """The box's part of the upsampled map (a view; rows are contiguous)."""
        self._fine_stale = True  # the nodes changed since self.fine was made (whole-box steps)

    def invert(self, field_px: np.ndarray, area: tuple[slice, slice] | None = None,
               converge: bool = False, upsample: bool = True) -> np.ndarray:
        """Inverse map for forward node displacements `field_px` (rows, cols, 2) → self.fine.

        self.fine[y, x] is the frame pixel (x, y) whose content lands on box pixel (y, x). With
        `area` (rows, cols of the box) only self.fine[area] need be made (for a power-of-two
        step only it is: the nodes around it iterated and upsampled on their own, a node past
        each edge included), the same values as a whole box's. With `converge`, the fixed steps
        are followed by up to `extra_iterations` more while a step still moves a node by more
        than the tolerance (for a steep field). Without `upsample` only the nodes are made
        (in frame pixels): `upsample` then makes the part of `area` that is wanted.
        """
        nodes = self._nodes_for(area)
        self._iterate(field_px, self.extra_iterations if converge else 0, nodes)
        self._to_pixels(nodes)
        self._fine_stale = True
        if upsample:
            self._resize(nodes)
        return self.fine

    @property
    def upsamples_in_parts(self) -> bool:
        """Whether `upsample` makes only the part it is given (power-of-two steps), not all."""
        s = self.grid.step
        return not s & (s - 1)

    def upsample(self, part: tuple[slice, slice] | None) -> np.ndarray:
        """self.fine over `part` of the area the last `invert(…, upsample=False)` was given
        (the same values as upsampling that whole area). Where only the whole box can be made
        (a step not a power of two), the first call after `invert` makes it and later ones
        return it as it is."""
        if self.upsamples_in_parts or self._fine_stale:
            self._resize(self._nodes_for(part))
        return self.fine

    def _nodes_for(self, area: tuple[slice, slice] | None) -> tuple[slice, slice]:
        """The node block whose upsampling covers box `area` (all nodes for the whole box, or
        when the step is not a power of two; see `_upsample`)."""
        s = self.grid.step
        n_rows, n_cols = self._s_idx.shape[:2]
        if area is None or not self.upsamples_in_parts:
            return slice(0, n_rows), slice(0, n_cols)
        # fine_all row R interpolates nodes R // s - 1 … R // s + 1 (half-pixel centres): a block
        # of nodes from one before to one past those upsamples to the same values in between.
        (r0, r1), (c0, c1) = ((sl.start + s, sl.stop + s) for sl in area)
        return (slice(max(0, r0 // s - 1), min(n_rows, (r1 - 1) // s + 2)),
                slice(max(0, c0 // s - 1), min(n_cols, (c1 - 1) // s + 2)))

    def _iterate(self, field_px: np.ndarray, extra: int, nodes: tuple[slice, slice]) -> None:
        """The inverse on the `nodes` block, in node-index units, into self._s_idx: the fixed
        steps, then up to `extra` more until a step moves no node by more than the tolerance.

        Each node iterates on its own (it samples the whole field where it is now), so a block
        of nodes iterated alone gets the values the whole grid's iteration gives it.
        """
        s = self.grid.step
        np.multiply(field_px, 1.0 / s, out=self._d_idx)  # node-index units, what remap wants
        s_idx, ident, sampled = self._s_idx[nodes], self._ident[nodes], self._sampled[nodes]
        np.subtract(ident, self._d_idx[nodes], out=s_idx)
        if self.relax != 1.0:
            for _ in range(self.iterations):
                cv2.remap(self._d_idx, s_idx, None, cv2.INTER_LINEAR, dst=sampled, borderMode=cv2.BORDER_REPLICATE)
                np.subtract(ident, sampled, out=sampled)  # the plain step's target
                cv2.addWeighted(s_idx, 1.0 - self.relax, sampled, self.relax, 0.0, dst=s_idx)
            return
        self._settle(nodes, self.iterations, extra)

    def _settle(self, nodes: tuple[slice, slice], iterations: int, extra: int) -> None:
        """Undamped steps s ← q − d(s) on the `nodes` block of self._s_idx: `iterations` of
        them, then up to `extra` more while a step moves some node by more than the tolerance.
        The fixed steps alternate between two buffers (no copy per step)."""
        s_idx, ident, sampled = self._s_idx[nodes], self._ident[nodes], self._sampled[nodes]
        cur, prev = s_idx, sampled
        for _ in range(iterations):
            cv2.remap(self._d_idx, cur, None, cv2.INTER_LINEAR, dst=prev, borderMode=cv2.BORDER_REPLICATE)
            np.subtract(ident, prev, out=prev)
            cur, prev = prev, cur  # the new estimate becomes the current one
        if cur is not s_idx:
            np.copyto(s_idx, cur)
        for _ in range(extra):
            cv2.remap(self._d_idx, s_idx, None, cv2.INTER_LINEAR, dst=sampled, borderMode=cv2.BORDER_REPLICATE)
            np.subtract(ident, sampled, out=sampled)
            step = float(np.abs(sampled - s_idx).max())
            np.copyto(s_idx, sampled)
            if step <= self._tolerance_nodes:
                return

    def _to_pixels(self, nodes: tuple[slice, slice]) -> None:
        """The `nodes` block's inverse, in node-index units, → frame pixel coordinates."""
        s_idx = self._s_idx[nodes]
        np.multiply(s_idx, float(self.grid.step), out=s_idx)
        np.add(s_idx, self._origin[nodes], out=s_idx)

    def _resize(self, nodes: tuple[slice, slice]) -> None:
        """The `nodes` block's inverse (frame pixels) upsampled to every pixel those nodes
        interpolate (self.fine, or the part of it `_nodes_for` chose)."""
        s = self.grid.step
        s_idx = self._s_idx[nodes]
        # cv2.resize places output pixels at (k + 0.5)/s − 0.5 of its input: exact in binary
        # for power-of-two steps only, so only then does a part upsample bit for bit alike
        # (`_nodes_for` gives other steps all nodes).
        (nr0, nr1), (nc0, nc1) = ((sl.start, sl.stop) for sl in nodes)
        self._fine_stale = False  # read only for whole-box steps, where this resize is the whole
        cv2.resize(s_idx, ((nc1 - nc0) * s, (nr1 - nr0) * s),
                   dst=self._fine_all[nr0 * s:nr1 * s, nc0 * s:nc1 * s], interpolation=cv2.INTER_LINEAR)

    def rows_reached(self, area: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) float32 per row of box `area`: bounds on the frame y that the map of the last
        `invert(…, area)` holds in that row over the area's columns.

        Read off the nodes: a map pixel is a bilinear mix of the 2 × 2 nodes around it, so it
        lies between their extremes; each row is given the extremes of the node rows around
        it (one more on either side, within the ones `invert` made, for cv2.resize's rounding).
        """
        s = self.grid.step
        nodes = self._nodes_for(area)
        ys = self._s_idx[nodes][..., 1]  # pixel units: `_to_pixels` converted them
        lo_n, hi_n = ys.min(axis=1), ys.max(axis=1)
        # fine_all row R (box row + s) interpolates node rows ⌊(R + ½)/s − ½⌋ and the next.
        r = np.arange(area[0].start + s, area[0].stop + s, dtype=np.float64)
        j = np.floor((r + 0.5) / s - 0.5).astype(np.intp) - nodes[0].start
        near = [np.clip(j + k, 0, len(lo_n) - 1) for k in (-1, 0, 1, 2)]
        return np.minimum.reduce([lo_n[k] for k in near]), np.maximum.reduce([hi_n[k] for k in near])

    def moving_tiles(self, tol_px: float = 1.0 / 128.0) -> np.ndarray:
        """(gh, gw) uint8, nonzero for the box's tiles (step × step pixels, tile (r, c) at box
        rows r·step …) where the last `invert`'s map moves some pixel by `tol_px` or more.

        A box pixel's map is the bilinear mix of the 3 × 3 nodes around its tile, so where all
        of them stay within `tol_px` of their own position, so does every pixel of the tile;
        cv2.remap rounds its maps to 1/32 px, and a map within 1/128 px of a pixel centre
        samples exactly that pixel: the tile is the source image, copying it gives the same
        bytes as remapping it.
        """
        np.subtract(self._s_idx, self._ident_px, out=self._sampled)  # after _upsample: pixels
        np.abs(self._sampled, out=self._sampled)
        np.maximum(self._sampled[..., 0], self._sampled[..., 1], out=self._moved)
        np.greater_equal(self._moved, tol_px, out=self._moving, casting="unsafe")
        cv2.dilate(self._moving, self._kernel, dst=self._moving)
        return self._moving[1:-1, 1:-1]
