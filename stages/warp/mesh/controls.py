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
JAW_DROP = 0.13  # × L: lower-lip drop at the middle of the mouth (see jaw_drop_px, docs/mesh-warp.md)
TYPICAL_MOUTH_SHARE = 0.25  # mouth width / face height of a typical face
UPPER_LIP_LIFT = 0.12  # × jaw drop
CORNER_DROP = 0.45  # × jaw drop
LIP_CLOSE_LOWER_SHARE = 0.5  # of the jaw's lip parting undone by the lower lip when closing
WIDTH_SPREAD = 0.10  # × mw per corner
ROUND_PULL = 0.14  # × mw per corner
SMILE_OUT, SMILE_UP = 0.07, 0.05  # × mw, × L
OVAL_RINGS = ((0.10, 0.55), (0.22, 0.2), (0.40, 0.0))  # (offset × L, share of the oval's motion)


def jaw_drop_px(frame: an.FaceFrame) -> float:
    """The lower lip's drop at jaw feature 1, in pixels.

    JAW_DROP × face height on a face whose mouth is TYPICAL_MOUTH_SHARE of its height, and
    scaled by the square root of its mouth's share otherwise: how open a mouth looks is read
    against its width, so a wide mouth opens a little further and a narrow one a little less.
    """
    share = frame.mouth_w_px / frame.face_h_px
    return JAW_DROP * frame.face_h_px * float(np.sqrt(share / TYPICAL_MOUTH_SHARE))


@dataclass(frozen=True)
class ControlSet:
    """Control points with their per-feature displacements and which layer uses which."""

    points_px: np.ndarray  # (n, 2) image positions at rest
    skin: np.ndarray  # (K, n, 2) image displacement per unit feature (lips, jaw, brows, lids…)
    base_ids: np.ndarray  # controls of the whole-face field: everything but the lips
    upper_ids: np.ndarray  # controls of the mouth's upper layer: upper lip and above
    lower_ids: np.ndarray  # controls of the mouth's jaw layer: lower lip and below


@dataclass
class _Rules:
    """The mesh points in face coordinates, and the displacement table the rules fill in."""

    frame: an.FaceFrame
    mouth: an.MouthGeometry
    u: np.ndarray
    v: np.ndarray
    disp_uv: np.ndarray  # (K, 468, 2) face-coordinate displacements per unit feature

    @classmethod
    def start(cls, landmarks_px: np.ndarray, frame: an.FaceFrame, mouth: an.MouthGeometry) -> "_Rules":
        """An empty table for the actor's mesh points."""
        uv = frame.to_face(landmarks_px)
        return cls(frame, mouth, uv[:, 0], uv[:, 1], np.zeros((N_FEATURES, an.N_MESH, 2)))

    def add(self, feature: str, mask: np.ndarray, du: np.ndarray | float = 0.0,
            dv: np.ndarray | float = 0.0) -> None:
        """Add (du, dv) per unit `feature` to the points in `mask` (arrays are per point)."""
        n = an.N_MESH
        self.disp_uv[F[feature], mask, 0] += np.broadcast_to(du, (n,))[mask]
        self.disp_uv[F[feature], mask, 1] += np.broadcast_to(dv, (n,))[mask]

    def ids(self, ids) -> np.ndarray:
        """Mask of the mesh points in `ids`."""
        return np.isin(np.arange(an.N_MESH), np.asarray(ids))


def build_controls(landmarks_px: np.ndarray, frame: an.FaceFrame, mouth: an.MouthGeometry,
                   eyes: tuple[an.EyeGeometry, an.EyeGeometry]) -> ControlSet:
    """Control points and their displacement bases for one actor."""
    lm = np.asarray(landmarks_px, dtype=np.float64)[: an.N_MESH, :2]
    rules = _Rules.start(lm, frame, mouth)
    _mouth_rules(rules)
    _eye_and_brow_rules(rules, eyes)
    skin = frame.to_image_vectors(rules.disp_uv)  # (K, 468, 2)
    return _with_rings_and_ghosts(lm, frame, mouth, rules, skin)


@dataclass(frozen=True)
class _MouthPoints:
    """What every mouth rule reads of the mesh points: which are lips, how far in from the lips'
    outer edge (0) to their inner edge (1), where they sit across the mouth and against the slit."""

    is_upper_lip: np.ndarray
    is_lower_lip: np.ndarray
    is_corner: np.ndarray
    is_lip: np.ndarray
    inner: np.ndarray  # 0 on the outer lip edge … 1 on the inner edge
    uh: np.ndarray  # u over the half mouth width: ±1 at the mouth corners
    uc: np.ndarray  # uh clipped to ±1
    v_slit: np.ndarray  # the lip slit's v at each point's u
    below_slit: np.ndarray
    corner_dist2: np.ndarray  # squared distance (px²) to the nearest corner, past the corners only

    @classmethod
    def of(cls, r: _Rules) -> "_MouthPoints":
        """The mouth's view of the table's mesh points."""
        u, v = r.u, r.v
        mhw = 0.5 * r.frame.mouth_w_px
        is_upper_lip, is_lower_lip, is_corner = r.ids(an.UPPER_LIP), r.ids(an.LOWER_LIP), r.ids(an.MOUTH_CORNERS)
        inner = np.zeros(an.N_MESH)
        for i, t in an.lip_innerness().items():
            inner[i] = t
        uh = u / mhw
        v_slit = r.mouth.slit(u)
        corner_dist2 = (np.maximum(np.abs(uh) - 1.0, 0.0) * mhw) ** 2 + (v - v_slit) ** 2
        return cls(is_upper_lip, is_lower_lip, is_corner, is_upper_lip | is_lower_lip | is_corner, inner,
                   uh, np.clip(uh, -1.0, 1.0), v_slit, v > v_slit, corner_dist2)


def _mouth_rules(r: _Rules) -> None:
    """Jaw, lip closure, width, rounding and smile."""
    m = _MouthPoints.of(r)
    _jaw_rules(r, m)
    _lip_closing_rules(r, m)
    _mouth_shape_rules(r, m)


def _jaw_rules(r: _Rules, m: _MouthPoints) -> None:
    """Jaw: a hinge near the ears — the middle of the lower face drops fully, the jaw line less
    and less toward the ear; the lower lip as one piece; corners lag; upper lip lifts a hair."""
    u, v, frame, uh, uc = r.u, r.v, r.frame, m.uh, m.uc
    face_h, mhw = frame.face_h_px, 0.5 * frame.mouth_w_px
    face_mid_u = 0.5 * (u[an.CHEEK_RIGHT] + u[an.CHEEK_LEFT])
    jaw = jaw_drop_px(frame)
    r.add("jaw", m.is_lower_lip, du=-0.12 * jaw * uc, dv=jaw * (1.0 - (1.0 - CORNER_DROP) * uc**2))
    r.add("jaw", m.is_upper_lip, du=-0.12 * jaw * uc,
          dv=jaw * (-UPPER_LIP_LIFT + (UPPER_LIP_LIFT + CORNER_DROP) * uc**2))
    r.add("jaw", m.is_corner, du=-0.12 * jaw * np.sign(uh), dv=CORNER_DROP * jaw)
    hinge_v = 0.5 * (v[an.CHEEK_RIGHT] + v[an.CHEEK_LEFT])
    lateral = 1.0 - 0.75 * smoothstep(0.35, 1.0, np.abs(u - face_mid_u) / (0.5 * frame.face_w_px))
    vertical = smoothstep(hinge_v, m.v_slit + 0.08 * face_h, v)
    # Above the slit only the cheeks follow the jaw; the nose and upper-lip skin stay.
    medial_hold = np.where(m.below_slit, 1.0, smoothstep(1.0, 1.8, np.abs(uh)))
    corner_lag = 1.0 - (1.0 - CORNER_DROP) * np.exp(-m.corner_dist2 / (0.35 * mhw) ** 2) * (np.abs(uh) > 0.6)
    r.add("jaw", ~m.is_lip, dv=jaw * lateral * vertical * medial_hold * corner_lag)


def _lip_closing_rules(r: _Rules, m: _MouthPoints) -> None:
    """Lips closed (p, b, m): the inner lips meet at their rest midline, and with `jaw_closed`
    they undo the jaw's parting; the skin next to the lips follows part-way."""
    u, v, mouth, inner, uc = r.u, r.v, r.mouth, m.inner, m.uc
    face_h = r.frame.face_h_px
    jaw = jaw_drop_px(r.frame)
    # The inner lips meet at their rest midline, pressed a little thinner…
    gap = mouth.rest_gap_px(u)
    press = 0.012 * face_h * (1.0 - inner) * (1.0 - uc**2)
    # …and a hair past it, so pressed lips overlap instead of leaving a seam of teeth.
    overlap = 0.018 * face_h * inner * (1.0 - uc**2)
    r.add("closed", m.is_upper_lip, dv=0.5 * gap * (0.35 + 0.65 * inner) + press + overlap)
    r.add("closed", m.is_lower_lip, dv=-0.5 * gap * (0.35 + 0.65 * inner) - press - overlap)
    parting = (1.0 + UPPER_LIP_LIFT) * jaw * (1.0 - uc**2)  # what the jaw opened between the lips
    r.add("jaw_closed", m.is_lower_lip, dv=-LIP_CLOSE_LOWER_SHARE * parting * (0.85 + 0.15 * inner))
    r.add("jaw_closed", m.is_upper_lip, dv=(1.0 - LIP_CLOSE_LOWER_SHARE) * parting * (0.7 + 0.3 * inner))
    # The skin next to the lips follows their closing part-way (fading over 0.1 × face height),
    # so the stretch is spread over the chin and philtrum instead of tearing at the lip border.
    mid = np.abs(m.uh) < 1.1
    below_lip = np.clip(1.0 - (v - mouth.outer_lower(u)) / (0.1 * face_h), 0.0, 1.0) ** 2
    above_lip = np.clip(1.0 - (mouth.outer_upper(u) - v) / (0.1 * face_h), 0.0, 1.0) ** 2
    skin_below, skin_above = ~m.is_lip & m.below_slit & mid, ~m.is_lip & ~m.below_slit & mid
    outer_press = 0.012 * face_h * (1.0 - uc**2)
    r.add("closed", skin_below, dv=-0.8 * below_lip * (0.5 * gap * 0.35 + outer_press))
    r.add("closed", skin_above, dv=0.8 * above_lip * (0.5 * gap * 0.35 + outer_press))
    r.add("jaw_closed", skin_below, dv=-0.8 * below_lip * LIP_CLOSE_LOWER_SHARE * parting * 0.7)
    r.add("jaw_closed", skin_above, dv=0.8 * above_lip * (1.0 - LIP_CLOSE_LOWER_SHARE) * parting * 0.5)


def _mouth_shape_rules(r: _Rules, m: _MouthPoints) -> None:
    """Width, rounding, smile: the corners lead, the lips and nearby cheeks follow."""
    v, inner, uh, uc, is_lip = r.v, m.inner, m.uh, m.uc, m.is_lip
    face_h, mouth_w = r.frame.face_h_px, r.frame.mouth_w_px
    mhw = 0.5 * mouth_w
    near_mouth = np.exp(-m.corner_dist2 / (0.5 * mouth_w) ** 2)
    thin = 0.015 * face_h * (1.0 - inner) * (1.0 - uc**2)
    r.add("width", is_lip, du=WIDTH_SPREAD * mouth_w * uc, dv=np.where(m.is_upper_lip, thin, -thin))
    r.add("width", ~is_lip, du=WIDTH_SPREAD * mouth_w * uc * near_mouth)
    pout = 0.02 * face_h * (1.0 - inner) * (1.0 - uc**2) + 0.008 * face_h * inner * (1.0 - uc**2) ** 2
    r.add("round", is_lip, du=-ROUND_PULL * mouth_w * uc, dv=np.where(m.is_upper_lip, -pout, pout))
    r.add("round", ~is_lip, du=-ROUND_PULL * mouth_w * uc * near_mouth)
    r.add("smile", is_lip, du=SMILE_OUT * mouth_w * uc * np.abs(uc), dv=-SMILE_UP * face_h * uc**2)
    corner_near = np.exp(-m.corner_dist2 / (0.4 * mouth_w) ** 2) * (np.abs(uh) > 0.5)
    cheek_apple = np.exp(-(((np.abs(uh) - 1.6) * mhw) ** 2 + (v - m.v_slit + 0.18 * face_h) ** 2)
                         / (0.16 * face_h) ** 2)
    r.add("smile", ~is_lip, du=SMILE_OUT * mouth_w * np.sign(uh) * corner_near,
          dv=-SMILE_UP * face_h * corner_near - 0.03 * face_h * cheek_apple)


def _eye_and_brow_rules(r: _Rules, eyes: tuple[an.EyeGeometry, an.EyeGeometry]) -> None:
    """Wide eyes, brows up and down, and a blink's side effects on the face layer."""
    u, v, face_h = r.u, r.v, r.frame.face_h_px
    face_mid_u = 0.5 * (u[an.CHEEK_RIGHT] + u[an.CHEEK_LEFT])
    inner_brow = r.ids((107, 66, 55, 65, 336, 296, 285, 295))
    for eye, brows in zip(eyes, (an.RIGHT_BROW, an.LEFT_BROW)):
        h = eye.height_px
        up, r2, r3, low, b = (r.ids(ids) for ids in (eye.upper_ids, eye.ring2_ids, eye.ring3_ids,
                                                     eye.lower_ids, brows))
        r.add("eye_wide", up, dv=-0.22 * h)
        r.add("eye_wide", r2, dv=-0.18 * h)
        r.add("eye_wide", r3, dv=-0.12 * h)
        r.add("eye_wide", b, dv=-0.08 * h)
        r.add("eye_wide", low, dv=0.04 * h)
        r.add("brow_up", b, dv=-0.045 * face_h)
        r.add("brow_up", r3, dv=-0.025 * face_h)
        r.add("brow_up", r2, dv=-0.012 * face_h)
        r.add("brow_up", up, dv=-0.004 * face_h)
        toward_mid = -np.sign(u - face_mid_u) * 0.015 * face_h * np.where(inner_brow, 1.0, 0.4)
        r.add("brow_down", b, du=toward_mid, dv=0.025 * face_h)
        r.add("brow_down", r3, dv=0.012 * face_h)
        r.add("brow_down", r2, dv=0.005 * face_h)
        # A blink's lower lid rises a little as the upper one comes down: 0.03 of the eye's width
        # at mid-eye, as real lids do (MediaPipe on d9, d3 and d14: 0.030–0.034, bench_blinks
        # --clips), its corners 0.05 of the eye's height.
        lo, hi = eye.u_range
        across = np.clip((u - 0.5 * (lo + hi)) / (0.5 * (hi - lo)), -1.0, 1.0) ** 2
        r.add("blink", low, dv=-(0.05 * h * across + 0.03 * eye.width_px * (1.0 - across)))
        r.add("blink", b, dv=0.006 * face_h)
        r.add("smile", low, dv=-0.01 * face_h)
    brow_line_v = np.maximum(v[list(an.RIGHT_BROW)].min(), v[list(an.LEFT_BROW)].min())
    forehead = (v < brow_line_v - 0.02 * face_h) & (np.abs(u - face_mid_u) < 0.5 * r.frame.face_w_px)
    r.add("brow_up", forehead,
          dv=-0.03 * face_h * (1.0 - 0.5 * np.clip((brow_line_v - v) / (0.3 * face_h), 0, 1)))


def _with_rings_and_ghosts(lm: np.ndarray, frame: an.FaceFrame, mouth: an.MouthGeometry,
                           r: _Rules, skin: np.ndarray) -> ControlSet:
    """Add the oval's fading rings and the lip ghosts; sort every control into its layers."""
    n, face_h = an.N_MESH, frame.face_h_px
    oval = np.array(an.FACE_OVAL)
    outward = lm[oval] - lm[oval].mean(0)
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    points = [lm] + [lm[oval] + offset * face_h * outward for offset, _ in OVAL_RINGS]
    disps = [skin] + [share * skin[:, oval] for _, share in OVAL_RINGS]
    n_rings = len(oval) * len(OVAL_RINGS)
    # Ghosts: a lip layer's field must go on moving like its own edge for a little way past it
    # (into the part it does not own), or the inverse map could not find that edge. Each
    # inner-lip point gets two ghosts across the parting line that copy its displacement.
    gap = mouth.rest_gap_px(r.u)
    kinds = []
    for ids, direction, kind in ((an.LIP_INNER_UPPER[1:-1], 1.0, "upper"),
                                 (an.LIP_INNER_LOWER[1:-1], -1.0, "lower")):
        for step in (0.03, 0.07):
            ids = np.array(ids)
            offsets = np.stack([np.zeros(len(ids)), direction * (0.5 * gap[ids] + step * face_h)], -1)
            points.append(lm[ids] + frame.to_image_vectors(offsets))
            disps.append(skin[:, ids])
            kinds += [kind] * len(ids)
    points = np.concatenate(points)
    skin = np.concatenate(disps, axis=1)

    kind = np.array([""] * (n + n_rings) + kinds)
    mesh = np.arange(len(points)) < n
    rings = ~mesh & (kind == "")
    pad = lambda a, fill: np.concatenate([a, np.full(len(points) - n, fill)])  # noqa: E731
    is_lip = pad(r.ids(an.LIPS), False)
    below = pad(r.v > mouth.slit(r.u), False)
    lateral = pad(np.abs(r.u) > 0.75 * frame.mouth_w_px, True)  # |u| > 1.5 half-widths
    upper_lip = pad(r.ids(an.UPPER_LIP + an.MOUTH_CORNERS), False)
    lower_lip = pad(r.ids(an.LOWER_LIP + an.MOUTH_CORNERS), False)
    skin_pt = (mesh | rings) & ~is_lip
    base = skin_pt
    upper = upper_lip | (skin_pt & (~below | lateral)) | (kind == "upper")
    lower = lower_lip | (skin_pt & (below | lateral)) | (kind == "lower")
    ids = np.arange(len(points))
    return ControlSet(points, skin, ids[base], ids[upper], ids[lower])
