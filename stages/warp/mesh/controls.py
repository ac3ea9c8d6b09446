"""Which control points move how: a displacement basis per feature, from the actor's landmarks.

Controls are the 468 face-mesh points plus three rings of virtual points outside the face oval
(they carry a fading share of the oval's motion, then zero, so expression motion dies out
smoothly below the chin and around the hairline instead of ending at the last landmark).

Every rule is written in face coordinates (u along the eyes, v toward the chin, pixels) and in
units of the face's own size, so it is the same motion on any actor at any scale or tilt:

- jaw: lower lip, chin and jaw line drop (a hinge near the ears: full drop in the middle, a
  quarter at the jaw angle, none at the ear); the lower lip drops as one piece (inner and outer
  edge together) so it keeps its thickness; the upper lip lifts a little; corners drop ~half.
- closed (p/b/m): inner lips meet at their rest midline; with `jaw_closed` (= jaw·closed) the lips
  also undo the jaw's parting — mostly the lower lip rising — while the chin stays down.
- width / round / smile: corners out / in / up-and-out, lips thin or pout, cheeks follow.
- eye_wide, brow_up/down: lids and brows. A blink's lid travel is not here: it is a layer of
  its own (eyes.py), so the lid slides over the eye instead of squashing it; the face only
  gets the blink's small side effects (lower lid rises a little, brows settle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.warp.mesh import anatomy as an
from stages.warp.mesh.features import F, N_FEATURES
from stages.warp.mesh.regions import smoothstep

# Motion extents at feature value 1, as fractions of face height (L) or mouth width (mw).
JAW_DROP = 0.085  # × L: lower-lip drop at the middle of the mouth
UPPER_LIP_LIFT = 0.12  # × jaw drop
CORNER_DROP = 0.45  # × jaw drop
LIP_CLOSE_LOWER_SHARE = 0.76  # of the jaw's lip parting undone by the lower lip when closing
WIDTH_SPREAD = 0.10  # × mw per corner
ROUND_PULL = 0.14  # × mw per corner
SMILE_OUT, SMILE_UP = 0.07, 0.05  # × mw, × L
OVAL_RINGS = ((0.10, 0.55), (0.22, 0.2), (0.40, 0.0))  # (offset × L, share of the oval's motion)


@dataclass(frozen=True)
class ControlSet:
    """Control points with their per-feature displacements and which layer uses which."""

    points_px: np.ndarray  # (n, 2) image positions at rest
    skin: np.ndarray  # (K, n, 2) image displacement per unit feature (lips, jaw, brows, lids…)
    base_ids: np.ndarray  # controls of the whole-face field: everything but the lips
    upper_ids: np.ndarray  # controls of the mouth's upper layer: upper lip and above
    lower_ids: np.ndarray  # controls of the mouth's jaw layer: lower lip and below


def build_controls(landmarks_px: np.ndarray, frame: an.FaceFrame, mouth: an.MouthGeometry,
                   eyes: tuple[an.EyeGeometry, an.EyeGeometry]) -> ControlSet:
    """Control points and their displacement bases for one actor."""
    lm = np.asarray(landmarks_px, dtype=np.float64)[: an.N_MESH, :2]
    n = an.N_MESH
    uv = frame.to_face(lm)
    u, v = uv[:, 0], uv[:, 1]
    face_h, mouth_w = frame.face_h_px, frame.mouth_w_px
    mhw = 0.5 * mouth_w
    idx = np.arange(n)
    is_upper_lip = np.isin(idx, an.UPPER_LIP)
    is_lower_lip = np.isin(idx, an.LOWER_LIP)
    is_corner = np.isin(idx, an.MOUTH_CORNERS)
    is_lip = is_upper_lip | is_lower_lip | is_corner
    inner = np.zeros(n)
    for i, t in an.lip_innerness().items():
        inner[i] = t
    uh = u / mhw  # ±1 at the mouth corners
    uc = np.clip(uh, -1.0, 1.0)
    v_slit = mouth.slit(u)
    below_slit = v > v_slit
    face_mid_u = 0.5 * (u[an.CHEEK_RIGHT] + u[an.CHEEK_LEFT])
    side = np.sign(u - face_mid_u)
    uv_disp = np.zeros((N_FEATURES, n, 2))  # face-coordinate displacements, converted at the end

    def add(feature: str, mask: np.ndarray, du: np.ndarray | float = 0.0, dv: np.ndarray | float = 0.0) -> None:
        k = F[feature]
        uv_disp[k, mask, 0] += np.broadcast_to(du, (n,))[mask]
        uv_disp[k, mask, 1] += np.broadcast_to(dv, (n,))[mask]

    # --- jaw -------------------------------------------------------------------------------
    jaw = JAW_DROP * face_h
    add("jaw", is_lower_lip, du=-0.12 * jaw * uc, dv=jaw * (1.0 - (1.0 - CORNER_DROP) * uc**2))
    add("jaw", is_upper_lip, du=-0.12 * jaw * uc,
        dv=jaw * (-UPPER_LIP_LIFT + (UPPER_LIP_LIFT + CORNER_DROP) * uc**2))
    add("jaw", is_corner, du=-0.12 * jaw * np.sign(uh), dv=CORNER_DROP * jaw)
    hinge_v = 0.5 * (v[an.CHEEK_RIGHT] + v[an.CHEEK_LEFT])
    lateral = 1.0 - 0.75 * smoothstep(0.35, 1.0, np.abs(u - face_mid_u) / (0.5 * frame.face_w_px))
    vertical = smoothstep(hinge_v, v_slit + 0.08 * face_h, v)
    # Above the slit only the cheeks follow the jaw; the nose and upper-lip skin stay.
    medial_hold = np.where(below_slit, 1.0, smoothstep(1.0, 1.8, np.abs(uh)))
    corner_dist2 = (np.maximum(np.abs(uh) - 1.0, 0.0) * mhw) ** 2 + (v - v_slit) ** 2
    corner_lag = 1.0 - (1.0 - CORNER_DROP) * np.exp(-corner_dist2 / (0.35 * mhw) ** 2) * (np.abs(uh) > 0.6)
    add("jaw", ~is_lip, dv=jaw * lateral * vertical * medial_hold * corner_lag)

    # --- lips closed (p, b, m) ------------------------------------------------------------
    gap = mouth.rest_gap_px(u)
    press = 0.012 * face_h * (1.0 - inner) * (1.0 - uc**2)
    # …and a hair past it, so pressed lips overlap instead of leaving a seam of teeth.
    overlap = 0.012 * face_h * inner * (1.0 - uc**2)
    add("closed", is_upper_lip, dv=0.5 * gap * (0.35 + 0.65 * inner) + press + overlap)
    add("closed", is_lower_lip, dv=-0.5 * gap * (0.35 + 0.65 * inner) - press - overlap)
    parting = (1.0 + UPPER_LIP_LIFT) * jaw * (1.0 - uc**2)  # what the jaw opened between the lips
    add("jaw_closed", is_lower_lip, dv=-LIP_CLOSE_LOWER_SHARE * parting * (0.7 + 0.3 * inner))
    add("jaw_closed", is_upper_lip, dv=(1.0 - LIP_CLOSE_LOWER_SHARE) * parting * (0.5 + 0.5 * inner))

    # --- width, round, smile ----------------------------------------------------------------
    near_mouth = np.exp(-corner_dist2 / (0.5 * mouth_w) ** 2)
    thin = 0.015 * face_h * (1.0 - inner) * (1.0 - uc**2)
    add("width", is_lip, du=WIDTH_SPREAD * mouth_w * uc, dv=np.where(is_upper_lip, thin, -thin))
    add("width", ~is_lip, du=WIDTH_SPREAD * mouth_w * uc * near_mouth)
    pout = 0.02 * face_h * (1.0 - inner) * (1.0 - uc**2) + 0.008 * face_h * inner * (1.0 - uc**2) ** 2
    add("round", is_lip, du=-ROUND_PULL * mouth_w * uc, dv=np.where(is_upper_lip, -pout, pout))
    add("round", ~is_lip, du=-ROUND_PULL * mouth_w * uc * near_mouth)
    add("smile", is_lip, du=SMILE_OUT * mouth_w * uc * np.abs(uc), dv=-SMILE_UP * face_h * uc**2)
    corner_near = np.exp(-corner_dist2 / (0.4 * mouth_w) ** 2) * (np.abs(uh) > 0.5)
    cheek_apple = np.exp(-(((np.abs(uh) - 1.6) * mhw) ** 2 + (v - v_slit + 0.18 * face_h) ** 2)
                         / (0.16 * face_h) ** 2)
    add("smile", ~is_lip, du=SMILE_OUT * mouth_w * np.sign(uh) * corner_near,
        dv=-SMILE_UP * face_h * corner_near - 0.03 * face_h * cheek_apple)

    # --- eyes and brows ---------------------------------------------------------------------
    brow_ids = (an.RIGHT_BROW, an.LEFT_BROW)
    inner_brow = {107, 66, 55, 65, 336, 296, 285, 295}
    for eye, brows in zip(eyes, brow_ids):
        h = eye.height_px
        up, r2, r3, low = (np.array(ids) for ids in (eye.upper_ids, eye.ring2_ids, eye.ring3_ids,
                                                      eye.lower_ids))
        b = np.array(brows)
        m = lambda ids: np.isin(idx, ids)  # noqa: E731 - tiny local helper
        add("eye_wide", m(up), dv=-0.22 * h)
        add("eye_wide", m(r2), dv=-0.18 * h)
        add("eye_wide", m(r3), dv=-0.12 * h)
        add("eye_wide", m(b), dv=-0.08 * h)
        add("eye_wide", m(low), dv=0.04 * h)
        add("brow_up", m(b), dv=-0.045 * face_h)
        add("brow_up", m(r3), dv=-0.025 * face_h)
        add("brow_up", m(r2), dv=-0.012 * face_h)
        add("brow_up", m(up), dv=-0.004 * face_h)
        toward_mid = -side * 0.015 * face_h * np.where(np.isin(idx, list(inner_brow)), 1.0, 0.4)
        add("brow_down", m(b), du=toward_mid, dv=0.025 * face_h)
        add("brow_down", m(r3), dv=0.012 * face_h)
        add("brow_down", m(r2), dv=0.005 * face_h)
        add("blink", m(low), dv=-0.05 * h)
        add("blink", m(b), dv=0.006 * face_h)
        add("smile", m(low), dv=-0.01 * face_h)
    brow_line_v = np.maximum(v[list(an.RIGHT_BROW)].min(), v[list(an.LEFT_BROW)].min())
    forehead = (v < brow_line_v - 0.02 * face_h) & (np.abs(u - face_mid_u) < 0.5 * frame.face_w_px)
    add("brow_up", forehead, dv=-0.03 * face_h * (1.0 - 0.5 * np.clip((brow_line_v - v) / (0.3 * face_h), 0, 1)))

    # --- to image space, plus the virtual rings outside the oval ----------------------------
    skin = frame.to_image_vectors(uv_disp)  # (K, n, 2)
    oval = np.array(an.FACE_OVAL)
    centre = lm[oval].mean(0)
    outward = lm[oval] - centre
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    ring_pts, ring_skin = [], []
    for offset, share in OVAL_RINGS:
        ring_pts.append(lm[oval] + offset * face_h * outward)
        ring_skin.append(share * skin[:, oval])
    points = np.concatenate([lm] + ring_pts)
    skin = np.concatenate([skin] + ring_skin, axis=1)
    gap = np.concatenate([gap, np.zeros(len(points) - n)])

    # Ghosts: a lip layer's field must go on moving like its own edge for a little way past
    # it (into the part it does not own), or the inverse map could not find that edge. Each
    # inner-lip point gets two ghosts across the parting line that copy its displacement.
    n_real = len(points)
    ghost_pts, ghost_skin, ghost_kind = [], [], []
    for ids, direction, kind in ((an.LIP_INNER_UPPER[1:-1], 1.0, "upper"),
                                 (an.LIP_INNER_LOWER[1:-1], -1.0, "lower")):
        for step in (0.03, 0.07):
            for i in ids:
                offset = np.array([0.0, direction * (0.5 * gap[i] + step * face_h)])
                ghost_pts.append(lm[i] + frame.to_image_vectors(offset))
                ghost_skin.append(skin[:, i])
                ghost_kind.append(kind)
    points = np.concatenate([points, np.array(ghost_pts)])
    skin = np.concatenate([skin, np.stack(ghost_skin, axis=1)], axis=1)
    ghost_kind = np.array([""] * n_real + ghost_kind)

    all_ids = np.arange(len(points))
    virtual = (all_ids >= n) & (all_ids < n_real)
    pad = len(points) - n
    real = ghost_kind == ""
    mesh_lip = np.concatenate([is_lip, np.zeros(pad, bool)])
    mesh_below = np.concatenate([below_slit, np.zeros(pad, bool)])
    mesh_lateral = np.concatenate([np.abs(uh) > 1.5, np.ones(pad, bool)])
    upper_lip_m = np.concatenate([is_upper_lip | is_corner, np.zeros(pad, bool)])
    lower_lip_m = np.concatenate([is_lower_lip | is_corner, np.zeros(pad, bool)])
    base = real & ~mesh_lip
    upper = (upper_lip_m | (real & ~mesh_lip & (~mesh_below | mesh_lateral))) | (ghost_kind == "upper")
    lower = (lower_lip_m | (real & ~mesh_lip & (mesh_below | mesh_lateral)) | virtual) | (ghost_kind == "lower")
    return ControlSet(points.astype(np.float64), skin, all_ids[base], all_ids[upper], all_ids[lower])
