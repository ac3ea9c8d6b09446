"""The mesh-warp backend: prepare an actor once, then render plan chunks into the video slab.

prepare() builds, per actor: the head ROI and its falloff, the control bases, a whole-face layer
on a coarse grid over the ROI and three mouth layers (upper lip, jaw side, teeth) on a finer
grid over the mouth — each a (features → node displacements) matrix — the eyelid patches with
their precomputed lid maps, and every scratch buffer the render loop will need.

render() works in blocks of frames: the block's feature rows, one matmul per layer for all its
node fields, then per frame only cv2 / numpy calls writing into those buffers: invert the
face layer's node field and upsample it, remap the head ROI where that map moves a pixel (copy
it elsewhere), then the mouth patch over the part its layers reach this frame (its layers
remapped and blended by their claims, the opening painted) and, during blinks, the lid
patches. Frames of a block are split across two threads (cv2 and numpy release the GIL); the
main thread computes the next block's fields meanwhile, into a second set of buffers.
Where the time goes, per step: benchmarks/bench_warp.py --profile.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX, Actor, MotionPlan
from stages.warp.mesh import anatomy as an
from stages.warp.mesh.controls import build_controls, jaw_drop_px
from stages.warp.mesh.eyes import EyeCompositor, EyePatch
from stages.warp.base import check_slab, validate_plan
from stages.warp.mesh.features import F, N_FEATURES, fill_features
from stages.warp.mesh.field import Box, Grid, GridInverter, parts_around
from stages.warp.mesh.lipline import refine_inner_lips
from stages.warp.mesh.bases import LayerBases, PoseLimits
from stages.warp.mesh.layers import HeadModel, LayerFields, pack
from stages.warp.mesh.mouth import MouthCompositor, MouthPatch, block_reach
from stages.warp.mesh.regions import HeadEllipse

BLOCK_FRAMES = 32
"""Frames whose node fields are computed together (one matmul per layer)."""
N_THREADS = 2
STRIPE_TILES = 8
"""Grid rows per stripe of the head ROI that is remapped between its first and last moving tile
(and, for a power-of-two step, upsampled just before: 64 rows of map, ~250 KB, still in cache
when the remap reads them; 32-row stripes upsample half as many rows again around them)."""
FIELDS_FRAMES = 1
"""About how many frames' rendering a block's fields take (~2 ms of 32 frames at ~4 ms each;
the main thread renders that many fewer frames of a block while it computes the next block's,
rounded: of 32 frames each thread renders 16)."""
FACE_ITERATIONS = 8
FACE_EXTRA_ITERATIONS = 12
STRONG_TURN_SHARE = 0.4
"""Fixed-point steps inverting the face layer: 8 always, and on a strong turn (more than 0.4 of
the head's fold-free budget, as bases.PoseLimits.apply reports it) up to 12 more while a step still moves
a node by more than 0.1 px. A strong turn's field is steep at the near side's hair and the far
cheek's edge (up to bases.MAX_POSE_STRETCH), where 8 steps left up to 6 px of error at 25° of
yaw; a small one's is not, and the extra steps would only cost time."""
_BLINK_EPS = 1e-3

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_render_lock = threading.Lock()
"""One render at a time per process: they share the pool and would only slow each other."""


@contextmanager
def _cv2_single_threaded():
    """OpenCV's own thread pool off while our render threads run (restored after).

    Two render threads already keep both cores busy; letting each cv2 call fan out to the
    same cores on top makes them queue behind each other and is slower than either alone.
    """
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _thread_pool() -> ThreadPoolExecutor:
    # One small pool for the process: render calls come one slot at a time.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=N_THREADS, thread_name_prefix="mesh-warp")
        return _pool


def _check_actor(actor: Actor) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(actor.image)
    if image.dtype != np.uint8 or image.shape != (FRAME_SIZE_PX, FRAME_SIZE_PX, 3):
        raise StageInputError("actor.image", f"expected a {FRAME_SIZE_PX}×{FRAME_SIZE_PX}×3 uint8 RGB image",
                              dtype=str(image.dtype), shape=tuple(image.shape))
    lm = np.asarray(actor.landmarks_px, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < an.N_MESH or lm.shape[1] != 3:
        raise StageInputError("actor.landmarks_px", "expected (478, 3) face-mesh landmarks",
                              shape=tuple(lm.shape))
    return np.ascontiguousarray(image), lm


class _Workspace:
    """Everything one render thread writes per frame, allocated once."""

    def __init__(self, image: np.ndarray, base_grid: Grid, mouth: MouthPatch, eyes: tuple[EyePatch, ...]) -> None:
        self.base = GridInverter(base_grid, iterations=FACE_ITERATIONS, extra_iterations=FACE_EXTRA_ITERATIONS)
        self.mouth = MouthCompositor(mouth, image)
        self.eyes = tuple(EyeCompositor(p, image) for p in eyes)


class _BlockFields:
    """One block's feature rows, every layer's node fields and the mouth's reach per frame."""

    def __init__(self, packed: dict[str, tuple[Grid, np.ndarray]]) -> None:
        self.features = np.zeros((BLOCK_FRAMES, N_FEATURES), np.float32)
        self.layers = {name: LayerFields(grid, basis, BLOCK_FRAMES) for name, (grid, basis) in packed.items()}
        self.reach = np.zeros((BLOCK_FRAMES, 4), np.float64)
        self.strong_turn = np.zeros(BLOCK_FRAMES, bool)


def _moving_spans(tiles: np.ndarray, stripe: int) -> list[tuple[int, int, int]]:
    """(first tile row, first moving tile column, one past the last) for each stripe of `stripe`
    tile rows of `tiles` ((rows, cols), nonzero where moving); (r0, 0, 0) for a still stripe."""
    n_rows, n_cols = tiles.shape
    pad = -n_rows % stripe
    moving = np.concatenate([tiles, np.zeros((pad, n_cols), tiles.dtype)]) if pad else tiles
    moving = moving.reshape(-1, stripe, n_cols).any(axis=1)
    first = np.argmax(moving, axis=1)
    stop = n_cols - np.argmax(moving[:, ::-1], axis=1)
    still = ~moving.any(axis=1)
    first[still], stop[still] = 0, 0
    return [(k * stripe, int(c0), int(c1)) for k, (c0, c1) in enumerate(zip(first, stop))]


def _offset(part: tuple[slice, slice], dy: int, dx: int) -> tuple[slice, slice]:
    """(rows, cols) slices moved by dy rows and dx columns."""
    return slice(part[0].start + dy, part[0].stop + dy), slice(part[1].start + dx, part[1].stop + dx)


def _sub_box(inner: Box, outer: Box) -> tuple[slice, slice]:
    """Slices of `inner` relative to `outer` (inner lies inside outer)."""
    return (slice(inner.y0 - outer.y0, inner.y0 - outer.y0 + inner.h),
            slice(inner.x0 - outer.x0, inner.x0 - outer.x0 + inner.w))


def _outside(box: Box) -> list[tuple[slice, slice]]:
    """(rows, cols) slices of the frame's bands above, below, left and right of `box`, the empty
    ones left out: together with the box they cover the frame once."""
    n = FRAME_SIZE_PX
    bands = [(slice(0, box.y0), slice(0, n)), (slice(box.y0 + box.h, n), slice(0, n)),
             (slice(box.y0, box.y0 + box.h), slice(0, box.x0)),
             (slice(box.y0, box.y0 + box.h), slice(box.x0 + box.w, n))]
    return [(r, c) for r, c in bands if r.stop > r.start and c.stop > c.start]


class PreparedMeshWarp:
    """An actor made ready for the mesh warp; `render` fills slab frames from a motion plan."""

    def __init__(self, actor: Actor) -> None:
        image, lm = _check_actor(actor)
        self.image = image
        frame = an.FaceFrame.from_landmarks(lm)
        mouth = refine_inner_lips(image, lm, frame, an.MouthGeometry.measure(frame, lm))
        eyes = (an.EyeGeometry.measure(frame, lm, "right"), an.EyeGeometry.measure(frame, lm, "left"))
        controls = build_controls(lm, frame, mouth, eyes)
        oval_uv = frame.to_face(lm[list(an.FACE_OVAL), :2])
        head = HeadEllipse.around(frame, oval_uv, frame.to_face(lm[an.FOREHEAD_TOP, :2]),
                                  frame.to_face(lm[an.CHIN, :2]))
        face_h = frame.face_h_px
        # Grid steps follow the face size: fine enough for the lips, coarse enough to be cheap.
        base_step = int(np.clip(round(face_h / 18.0), 4, 8))
        mouth_step = int(np.clip(round(face_h / 55.0), 2, 4))
        base_grid = Grid.covering(*head.bounding_box_px(frame), step=base_step,
                                  within=Box(0, 0, FRAME_SIZE_PX, FRAME_SIZE_PX))
        self.roi = base_grid.box
        self._outside_roi = _outside(self.roi)
        self.mouth_patch = MouthPatch.build(image, lm, frame, mouth, self.roi, mouth_step,
                                            max_drop_px=1.3 * jaw_drop_px(frame))
        self.eye_patches = [EyePatch.build(frame, eye, self.roi) for eye in eyes]
        bases = LayerBases(frame, head, HeadModel.build(frame, lm, head), controls, mouth)
        base_basis = bases.face(base_grid)
        self._pose_limits = PoseLimits(base_basis, base_grid)
        packed = {"base": (base_grid, pack(base_basis))}
        packed.update({name: (self.mouth_patch.grid, pack(basis)) for name, basis in bases.mouth(self.mouth_patch).items()})
        # Two blocks' worth: the next block's fields are computed while this one renders.
        self._blocks = (_BlockFields(packed), _BlockFields(packed))
        self._current = self._blocks[0]
        self._workspaces = [_Workspace(image, base_grid, self.mouth_patch, tuple(self.eye_patches))
                            for _ in range(N_THREADS)]

    @property
    def face_layer(self) -> LayerFields:
        """The whole-face layer (head pose + expressions on the ROI grid): for checks of its field
        (its fields are those of the block rendered last)."""
        return self._current.layers["base"]

    @property
    def pose_limits(self) -> PoseLimits:
        """How far the render lets the head turn and shift (each alone and all together)."""
        return self._pose_limits

    def prepare_motion(self, plan: MotionPlan) -> None:
        """Nothing to prepare: the mesh warp renders from the plan's curves alone (a driving
        clip's motion is already in them)."""

    def render(self, plan: MotionPlan, frames: slice, out: np.ndarray) -> None:
        """Write frames `frames` of `plan` into `out[frames]` ((n, 512, 512, 3) uint8 slab)."""
        start, stop = validate_plan(plan, frames)
        check_slab(out, stop)
        if stop == start:
            return
        with _render_lock, _cv2_single_threaded():
            self._render_blocks(plan, start, stop, out)

    def _render_blocks(self, plan: MotionPlan, start: int, stop: int, out: np.ndarray) -> None:
        """Render block by block on two threads; the main thread also computes the next block's
        fields meanwhile (so it takes FIELDS_FRAMES fewer frames), instead of both threads
        waiting for them between blocks."""
        pool = _thread_pool()
        spans = [(b, max(start, b) - b, min(stop, b + BLOCK_FRAMES) - b)
                 for b in range(start - start % BLOCK_FRAMES, stop, BLOCK_FRAMES)]
        self._fill_block_fields(self._blocks[0], plan, *spans[0])
        for k, (block_start, first, last) in enumerate(spans):
            block = self._blocks[k % 2]
            ahead = spans[k + 1] if k + 1 < len(spans) else None
            split = min(max(first, (first + last + 1 - (FIELDS_FRAMES if ahead else 0)) // 2), last)
            job = pool.submit(self._render_frames, self._workspaces[1], block, range(split, last), block_start, out)
            try:
                if ahead is not None:
                    self._fill_block_fields(self._blocks[(k + 1) % 2], plan, *ahead)
                self._render_frames(self._workspaces[0], block, range(first, split), block_start, out)
            finally:
                job.result()  # the other thread is done with `block` before it is refilled
            self._current = block

    def _fill_block_fields(self, block: "_BlockFields", plan: MotionPlan, block_start: int, first: int,
                           last: int) -> None:
        """Node fields of block rows [first, last) of the block at absolute frame `block_start`.

        Blocks sit at multiples of BLOCK_FRAMES and always have the full block shape (rows
        outside the request are zero), so a frame's fields are computed alike however a caller
        chunks a render (they once went through BLAS, whose kernels round a row by the block's
        shape; LayerFields.compute no longer does, and this keeps it true for any change).
        """
        features, layers = block.features, block.layers
        features.fill(0.0)
        fill_features(plan, block_start + first, block_start + last, FRAME_SIZE_PX, features[first:])
        np.greater(self._pose_limits.apply(features), STRONG_TURN_SHARE, out=block.strong_turn)
        for layer in layers.values():
            layer.compute(features)
        block_reach(self.mouth_patch, layers["upper"].fields, layers["lower"].fields, layers["teeth"].fields,
                    block.reach)

    def _render_frames(self, ws: _Workspace, block: "_BlockFields", js: range, block_start: int,
                       out: np.ndarray) -> None:
        layers = block.layers
        mouth_box = self.mouth_patch.grid.box
        blink = block.features[:, F["blink"]]
        for j in js:
            dst = out[block_start + j]
            self._copy_frame(dst)
            # Where it can, the face map is upsampled stripe by stripe as the ROI is remapped
            # (each stripe's map still in cache when read), not all at once.
            ws.base.invert(layers["base"].fields[j], converge=bool(block.strong_turn[j]), upsample=False)
            area = ws.mouth.active_area(block.reach[j])
            # What the mouth covers whole, the face layer need not draw first.
            under_mouth = ws.mouth.opaque_part(area)
            if under_mouth is not None:
                under_mouth = _offset(under_mouth, mouth_box.y0 - self.roi.y0, mouth_box.x0 - self.roi.x0)
            self._remap_head(ws.base, dst, under_mouth)
            ws.mouth.render(layers["upper"].fields[j], layers["lower"].fields[j],
                            layers["teeth"].fields[j], area, dst[mouth_box.slices])
            if blink[j] > _BLINK_EPS:  # with open eyes the lid layer is the face layer
                self._draw_lids(ws, layers["base"], j, float(blink[j]), dst)

    def _copy_frame(self, dst: np.ndarray) -> None:
        """The actor image into the frame outside the head ROI (`_remap_head` writes the ROI)."""
        for part in self._outside_roi:
            np.copyto(dst[part], self.image[part])

    def _remap_head(self, inverter: GridInverter, dst: np.ndarray, skip: tuple[slice, slice] | None = None) -> None:
        """The face layer: the head ROI of `dst` sampled from the actor image through the map
        `inverter` just made, but for the ROI's rows and columns `skip` (left as they are).

        Only where the map moves a pixel is it remapped, stripe by stripe of the ROI between the
        first and last moving tile; the rest (the corners around the head, at least) is copied,
        which gives the same bytes (see GridInverter.moving_tiles) at a fraction of the cost.
        """
        roi_dst, roi_src = dst[self.roi.slices], self.image[self.roi.slices]
        tiles, step = inverter.moving_tiles(), inverter.grid.step
        n_rows = tiles.shape[0]
        for r0, c0, c1 in _moving_spans(tiles, STRIPE_TILES):
            rows = slice(r0 * step, min(r0 + STRIPE_TILES, n_rows) * step)
            c0, c1 = c0 * step, c1 * step
            np.copyto(roi_dst[rows, :c0], roi_src[rows, :c0])
            np.copyto(roi_dst[rows, c1:], roi_src[rows, c1:])
            parts = parts_around(rows, slice(c0, c1), skip)
            if parts:
                inverter.upsample((rows, slice(c0, c1)))
            for part in parts:
                cv2.remap(self.image, inverter.fine[part], None, cv2.INTER_LINEAR, dst=roi_dst[part],
                          borderMode=cv2.BORDER_REPLICATE)

    def _draw_lids(self, ws: _Workspace, base: LayerFields, j: int, blink: float, dst: np.ndarray) -> None:
        """Both upper lids at `blink` over frame `dst` (row j of the face layer `base`'s block),
        where the eyes are now."""
        for eye, patch in zip(ws.eyes, self.eye_patches):
            # The lid is drawn where the eye is now: a turned, nodded or shifted head
            # carries it tens of pixels from where it sits in the picture.
            dx, dy = base.grid.displacement_at(base.fields[j], patch.centre_px)
            box = patch.box.moved_within(round(float(dx)), round(float(dy)), self.roi)
            part = _sub_box(box, self.roi)
            eye.render(blink, ws.base.upsample(part)[part], dst[box.slices])


class MeshWarpBackend:
    """Landmark-driven dense warp with a synthesised mouth interior; CPU, no model weights."""

    def __init__(self, name: str = "mesh") -> None:
        self.name = name

    def prepare(self, actor: Actor) -> PreparedMeshWarp:
        """Precompute the actor's layers, bases and scratch buffers (~0.1–0.5 s)."""
        return PreparedMeshWarp(actor)
