"""The mesh warp's layer bases, built once per actor: head pose and expressions on grid nodes.

The face layer (pose + whole-face expression on the coarse ROI grid) and the three mouth layers
(upper lip, jaw side, teeth on the finer mouth grid) are each a (K, nodes, 2) displacement basis;
`pose_limits` bounds the pose features so the face layer never folds.
"""

from __future__ import annotations

import numpy as np

from stages.types import FRAME_SIZE_PX
from stages.warp.mesh import anatomy as an
from stages.warp.mesh.controls import ControlSet
from stages.warp.mesh.features import F, N_FEATURES
from stages.warp.mesh.field import Grid
from stages.warp.mesh.layers import HeadModel, expression_basis, pose_basis
from stages.warp.mesh.mouth import MouthPatch
from stages.warp.mesh.regions import HeadEllipse, box_window, head_window, smoothstep


_POSE_FEATURES = ("sin_yaw", "sin_pitch", "sin_roll", "shift_x", "shift_y")
_MAX_POSE_STRETCH = 0.5
"""Most a single pose feature may stretch or squeeze the picture (|∂d/∂x|): beyond ~1 the
warp would fold. It only binds when the head nearly fills the frame, where the falloff to the
fixed frame edges is short."""


def pose_limits(basis: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-feature bound on |feature| (inf for non-pose features) from the field's steepest slope."""
    limits = np.full(N_FEATURES, np.inf, np.float32)
    rows, cols = grid.shape
    for name in _POSE_FEATURES:
        field = basis[F[name]].reshape(rows, cols, 2)
        slopes = [np.gradient(field[..., c], grid.step, axis=a) for c in (0, 1) for a in (0, 1)]
        steepest = float(np.sqrt(sum(g**2 for g in slopes)).max())
        if steepest > 0:
            limits[F[name]] = _MAX_POSE_STRETCH / steepest
    return limits


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
        return head_window(self.frame, self.head, nodes, FRAME_SIZE_PX, self.edge_px).reshape(1, -1, 1)

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
