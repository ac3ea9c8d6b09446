"""The mesh warp's layer bases, built once per actor: head pose and expressions on grid nodes.

The face layer (pose + whole-face expression on the coarse ROI grid) and the three mouth layers
(upper lip, jaw side, teeth on the finer mouth grid) are each a (K, nodes, 2) displacement basis;
`pose_limits` bounds the pose features so the face layer never folds.
"""

from __future__ import annotations

import itertools

import numpy as np

from stages.types import FRAME_SIZE_PX, MotionPlan
from stages.warp.mesh import anatomy as an
from stages.warp.mesh.controls import ControlSet
from stages.warp.mesh.features import F, MAX_ANGLE_DEG, N_FEATURES, fill_features
from stages.warp.mesh.field import Grid
from stages.warp.mesh.layers import HeadModel, LayerFields, expression_basis, pose_basis
from stages.warp.mesh.mouth import MouthPatch
from stages.warp.mesh.regions import HeadEllipse, box_window, head_window, smoothstep


_AXES = ("yaw", "pitch", "roll")
_SIN = np.array([F[f"sin_{a}"] for a in _AXES])
_VERSIN = np.array([F[f"versin_{a}"] for a in _AXES])
_EXPONENTS = (4.0, 3.0, 2.0, 1.5, 1.0)
_SHIFT_FEATURES = ("shift_x", "shift_y")
MAX_POSE_STRETCH = 0.9
"""Steepest a head pose may make the face layer's field (|∇d|, Frobenius): the render inverts
the field by fixed-point iteration, which converges only below 1, slowly near it — only at a
strong turn's steepest places (the near side's hair, the far cheek's edge)."""
MIN_POSE_AREA = 0.2
"""Least a head pose may squeeze any part of the picture (the field's Jacobian determinant): > 0
is no fold, and 0.2 keeps a far cheek at 25° visible as a sliver rather than a crease."""
_LIMIT_STEP_DEG = 0.5


def _field_gradients(field: np.ndarray, step: float) -> np.ndarray:
    """(2, 2, rows, cols) ∂d_c/∂x_a of a (rows, cols, 2) node field."""
    # np.gradient's axis 0 is rows (y), axis 1 columns (x).
    field = np.asarray(field, dtype=np.float64)
    return np.array([[np.gradient(field[..., c], step, axis=1 - a) for a in (0, 1)] for c in (0, 1)])


def _gradients(basis: np.ndarray, name: str, grid: Grid) -> np.ndarray:
    """(2, 2, rows, cols) gradients of one feature's node field per unit feature."""
    return _field_gradients(basis[F[name]].reshape(grid.shape + (2,)), grid.step)


def _area(jac: np.ndarray) -> np.ndarray:
    """The Jacobian determinant of the map p → p + d(p), from d's gradients (2, 2, …)."""
    return (1.0 + jac[0, 0]) * (1.0 + jac[1, 1]) - jac[0, 1] * jac[1, 0]


def _pose_ok(jac: np.ndarray) -> bool:
    """Whether a field with displacement gradients `jac` (2, 2, …) neither folds nor defeats the inverter."""
    return bool(_area(jac).min() >= MIN_POSE_AREA and np.sqrt((jac**2).sum(axis=(0, 1))).max() <= MAX_POSE_STRETCH)


def _angle_limit_deg(basis: np.ndarray, axis: str, grid: Grid, max_deg: float) -> float:
    """The largest angle (both ways) the face layer can turn about `axis` within the two bounds."""
    d_sin, d_versin = _gradients(basis, f"sin_{axis}", grid), _gradients(basis, f"versin_{axis}", grid)
    limit = 0.0
    for deg in np.arange(_LIMIT_STEP_DEG, max_deg + 1e-9, _LIMIT_STEP_DEG):
        rad = np.radians(deg)
        if not all(_pose_ok(sign * np.sin(rad) * d_sin + (1.0 - np.cos(rad)) * d_versin) for sign in (1, -1)):
            break
        limit = float(deg)
    return limit


def _per_feature_limits(basis: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-feature bound on |feature| (inf for the expression features) for the face layer.

    Angles: the largest turn about each axis alone that keeps the field fold-free and
    invertible (MIN_POSE_AREA, MAX_POSE_STRETCH), as bounds on its sine and versine. Shifts: the
    largest that stretches the picture at most MAX_POSE_STRETCH. The frame's edges, where motion
    across them must die out, are what binds when the head fills the frame.
    """
    limits = np.full(N_FEATURES, np.inf, np.float32)
    for axis in _AXES:
        rad = np.radians(_angle_limit_deg(basis, axis, grid, MAX_ANGLE_DEG))
        limits[F[f"sin_{axis}"]] = np.sin(rad)
        limits[F[f"versin_{axis}"]] = 1.0 - np.cos(rad)
    for name in _SHIFT_FEATURES:
        steepest = float(np.sqrt((_gradients(basis, name, grid) ** 2).sum(axis=(0, 1))).max())
        if steepest > 0:
            limits[F[name]] = MAX_POSE_STRETCH / steepest
    return limits


class PoseLimits:
    """How far the face layer may turn: each axis alone, and all three together.

    Alone, an axis may reach its fold-free limit. Together, the turns share one budget:
    (Σ |sin a / limit a|^p)^(1/p) ≤ 1, so a frame asking for more has all three scaled down by
    the same factor (the direction of the turn kept). p is the largest of _EXPONENTS for which
    every combined turn on the budget's edge is still fold-free and invertible — checked at
    prepare on the 26 directions of the cube, since the stresses of different axes sit in
    different places (yaw at the near side's hair, pitch at the top edge) and rarely add.
    """

    def __init__(self, basis: np.ndarray, grid: Grid) -> None:
        self.per_feature = _per_feature_limits(basis, grid)
        self._sin_limits = self.per_feature[_SIN].astype(np.float64)
        jac = [(_gradients(basis, f"sin_{a}", grid), _gradients(basis, f"versin_{a}", grid)) for a in _AXES]
        self.exponent = next((p for p in _EXPONENTS if self._edge_ok(jac, p)), 1.0)

    def _edge_ok(self, jac: list[tuple[np.ndarray, np.ndarray]], p: float) -> bool:
        """Whether every combined turn on the budget's edge for exponent p passes the two bounds."""
        for direction in itertools.product((-1, 0, 1), repeat=3):
            d = np.array(direction, np.float64)
            if not d.any():
                continue
            sines = self._sin_limits * d / (np.abs(d) ** p).sum() ** (1.0 / p)
            total = sum(s * d_sin + (1.0 - np.sqrt(1.0 - s * s)) * d_versin
                        for s, (d_sin, d_versin) in zip(sines, jac))
            if not _pose_ok(total):
                return False
        return True

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Clip a block of feature rows (B, K) in place to the limits and the joint budget;
        returns (B,) how much of the budget each row's turn uses now (≤ 1)."""
        np.clip(features, -self.per_feature, self.per_feature, out=features)
        sines = features[:, _SIN].astype(np.float64)
        share = np.divide(np.abs(sines), self._sin_limits, out=np.zeros_like(sines),
                          where=self._sin_limits > 0)
        budget = (share**self.exponent).sum(axis=1) ** (1.0 / self.exponent)
        over = budget > 1.0
        if over.any():
            scaled = sines[over] / budget[over, None]
            features[np.ix_(over, _SIN)] = scaled
            features[np.ix_(over, _VERSIN)] = 1.0 - np.sqrt(1.0 - scaled * scaled)
        return np.minimum(budget, 1.0)


def angle_limit_deg(limits: PoseLimits, axis: str) -> float:
    """The turn about `axis` (yaw, pitch, roll) alone that the face layer allows, in degrees."""
    return float(np.degrees(np.arcsin(min(float(limits.per_feature[F[f"sin_{axis}"]]), 1.0))))


def least_area(layer: LayerFields, plan: MotionPlan, limits: PoseLimits) -> float:
    """Least Jacobian determinant of a face layer's field over every frame of `plan` (> 0: no fold)."""
    features = np.zeros((plan.n_frames, N_FEATURES), np.float32)
    fill_features(plan, 0, plan.n_frames, FRAME_SIZE_PX, features)
    limits.apply(features)
    least = np.inf
    for row in features:
        field = (row @ layer.basis).reshape(layer.grid.shape + (2,))
        least = min(least, float(_area(_field_gradients(field, layer.grid.step)).min()))
    return least


class LayerBases:
    """The (K, nodes, 2) displacement bases of the face layer and the three mouth layers."""

    def __init__(self, frame: an.FaceFrame, head: HeadEllipse, head_model: HeadModel,
                 controls: ControlSet, mouth: an.MouthGeometry) -> None:
        self.frame, self.head, self.head_model = frame, head, head_model
        self.controls, self.lips = controls, mouth
        self.edge_px = max(12.0, 0.25 * frame.face_h_px)  # a wide fade: motion near an edge eases off
        self.sigma_face = 0.035 * frame.face_h_px
        self.sigma_lips = 0.035 * frame.face_h_px

    def _window(self, nodes: np.ndarray) -> np.ndarray:
        return head_window(self.frame, self.head, nodes, FRAME_SIZE_PX, self.edge_px).reshape(1, -1, 2)

    def face(self, grid: Grid) -> np.ndarray:
        """Head pose + whole-face expression at the grid's nodes, faded out by the head window."""
        nodes = grid.nodes()
        basis = pose_basis(self.frame, self.head_model, nodes)
        basis += expression_basis(nodes, self.controls, self.controls.base_ids, self.sigma_face, exact=False)
        return basis * self._window(nodes)

    def mouth(self, patch: MouthPatch) -> dict[str, np.ndarray]:
        """Upper-lip, jaw-side and teeth layers: the face layer plus each side's own lip motion
        inside the patch window (zero at the patch border, so they meet the face layer there)."""
        nodes = patch.grid.nodes()
        c, frame = self.controls, self.frame
        face = self.face(patch.grid)
        window = self._window(nodes)
        local = box_window(frame, nodes, patch.inner_rect_uv, patch.ramp_px).reshape(1, -1, 1)
        e_face = expression_basis(nodes, c, c.base_ids, self.sigma_face, exact=False)
        e_upper = expression_basis(nodes, c, c.upper_ids, self.sigma_lips, exact=True)
        e_lower = expression_basis(nodes, c, c.lower_ids, self.sigma_lips, exact=True)
        # Past the mouth corners the two sides must move as one, or the lips would tear open
        # across the cheeks: there both use the mean of the two fields.
        past_corner = self.lips.slit.signed_overhang(frame.to_face(nodes)[..., 0]).reshape(1, -1, 1)
        half_w = self.lips.half_w_px
        merge = 0.5 * smoothstep(-0.15 * half_w, 0.05 * half_w, past_corner)
        e_upper, e_lower = (1 - merge) * e_upper + merge * e_lower, merge * e_upper + (1 - merge) * e_lower
        return {"upper": face + (e_upper - e_face) * local * window,
                "lower": face + (e_lower - e_face) * local * window,
                # Upper teeth are fixed to the skull: they follow the head only.
                "teeth": pose_basis(frame, self.head_model, nodes) * window}
