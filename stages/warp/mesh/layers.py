"""Displacement bases on grid nodes: head pose (analytic, with depth) and expressions (RBF).

A layer's basis is a (K, n_nodes·2) float32 matrix, so a block of frames turns into node
fields with one matmul: fields = features (B, K) @ basis.

Head pose rotates each node in 3-D about a pivot in the neck, using a depth map interpolated
from the landmarks' z — the nose swings further than the cheeks when the head turns
(parallax) — and is cut to zero outside the head by the falloff window.

Sign conventions (degrees; the motion planner's): +yaw turns the face toward the picture's left
(the actor's right), +pitch lifts the chin, +roll tilts the head clockwise in the picture;
shifts are picture pixels, +x right, +y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.types import FRAME_SIZE_PX
from stages.warp.mesh.anatomy import FACE_OVAL, FaceFrame
from stages.warp.mesh.controls import ControlSet
from stages.warp.mesh.features import F, N_FEATURES
from stages.warp.mesh.field import Grid, gaussian_rbf_weights, normalized_gaussian_weights
from stages.warp.mesh.head_depth import HeadDepth
from stages.warp.mesh.regions import HeadEllipse


@dataclass(frozen=True)
class HeadModel:
    """The head's depth everywhere (head_depth.py), and the neck pivot the head turns about."""

    frame: FaceFrame
    depth: HeadDepth
    pivot_uvz: np.ndarray  # (3,) pivot in face coordinates + depth

    @classmethod
    def build(cls, frame: FaceFrame, landmarks_px: np.ndarray, head: HeadEllipse) -> "HeadModel":
        """Fit the skull's ellipsoid to the face oval's depths and put the pivot in the neck."""
        mesh = np.asarray(landmarks_px, dtype=np.float64)[: frame.depth_px.shape[0], :2]
        oval = list(FACE_OVAL)
        oval_uv = frame.to_face(mesh[oval])
        r = head.radius(oval_uv)
        s = np.clip(1.0 - r**2, 0.0, 1.0)
        crown = float(max((frame.depth_px[oval] @ s) / max(s @ s, 1e-9), 0.0))
        pivot = np.array([0.5 * (oval_uv[:, 0].min() + oval_uv[:, 0].max()),
                          oval_uv[:, 1].max() + 0.2 * frame.face_h_px, -0.15 * frame.face_w_px])
        return cls(frame, HeadDepth(frame, landmarks_px, head, crown, FRAME_SIZE_PX), pivot)

    def depth_at(self, nodes_px: np.ndarray) -> np.ndarray:
        """Depth (toward the viewer) at image points (..., 2)."""
        return self.depth.at(nodes_px)


def pose_basis(frame: FaceFrame, head: HeadModel, nodes_px: np.ndarray) -> np.ndarray:
    """(K, n, 2) image displacement of nodes per unit pose feature (sin/versin of angles, shift)."""
    pts = nodes_px.reshape(-1, 2)
    uv = frame.to_face(pts)
    du = uv[:, 0] - head.pivot_uvz[0]
    dv = uv[:, 1] - head.pivot_uvz[1]
    dz = head.depth_at(pts) - head.pivot_uvz[2]
    out_uv = np.zeros((N_FEATURES, pts.shape[0], 2))
    out_uv[F["sin_yaw"], :, 0] = -dz  # the nose (nearest the viewer) swings furthest
    out_uv[F["versin_yaw"], :, 0] = -du
    out_uv[F["sin_pitch"], :, 1] = -dz
    out_uv[F["versin_pitch"], :, 1] = -dv
    out_uv[F["sin_roll"], :, 0] = -dv
    out_uv[F["sin_roll"], :, 1] = du
    out_uv[F["versin_roll"], :, 0] = -du
    out_uv[F["versin_roll"], :, 1] = -dv
    out = frame.to_image_vectors(out_uv)
    out[F["shift_x"], :, 0] = 1.0
    out[F["shift_y"], :, 1] = 1.0
    return out


def expression_basis(nodes_px: np.ndarray, controls: ControlSet, ids: np.ndarray, sigma_px: float,
                     exact: bool) -> np.ndarray:
    """(K, n, 2) displacement of nodes per unit feature, interpolated from controls `ids`.

    exact: interpolate (Gaussian RBF; the lip layers, where edges must land where they are
    told), else a normalised average (the whole-face field: smooth, never overshooting).
    """
    pts = nodes_px.reshape(-1, 2)
    if exact:
        w = gaussian_rbf_weights(pts, controls.points_px[ids], sigma_px, ridge=1e-2)
    else:
        w = normalized_gaussian_weights(pts, controls.points_px[ids], sigma_px)
    disp = controls.skin[:, ids]  # (K, c, 2)
    k, c, _ = disp.shape
    flat = w @ disp.transpose(1, 0, 2).reshape(c, k * 2)  # one BLAS matmul, (n, K·2)
    return flat.reshape(-1, k, 2).transpose(1, 0, 2)


def pack(basis_knd: np.ndarray) -> np.ndarray:
    """(K, n, 2) float64 → the (K, n·2) float32 matrix a block matmul uses."""
    k = basis_knd.shape[0]
    return np.ascontiguousarray(basis_knd.reshape(k, -1), dtype=np.float32)


class LayerFields:
    """One layer's grid and basis, and its node fields for the current block of frames."""

    def __init__(self, grid: Grid, basis: np.ndarray, max_block: int) -> None:
        self.grid = grid
        self.basis = basis  # (K, gh·gw·2) float32
        self._flat = np.empty((max_block, basis.shape[1]), np.float32)
        self.fields = self._flat.reshape((max_block,) + grid.shape + (2,))

    def compute(self, features: np.ndarray) -> None:
        """Node fields for every frame of a whole block, written into the preallocated buffer.

        numpy's own sum of products (einsum without optimize never calls BLAS), not a matmul: the
        product is small (K ≈ 18), and OpenBLAS's worker threads kept spinning after every call
        on the cores the render threads need (3.3 ms of CPU per frame beside a one-thread render,
        `bench_warp.py --profile`); its sums also round the same on every CPU and BLAS build,
        whatever the block's shape.
        """
        if features.shape != (self._flat.shape[0], self.basis.shape[0]):
            raise ValueError(f"expected a full block of features {(self._flat.shape[0], self.basis.shape[0])}, "
                             f"got {features.shape}")
        np.einsum("bk,kn->bn", features, self.basis, out=self._flat, optimize=False)
