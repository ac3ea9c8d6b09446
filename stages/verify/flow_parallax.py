"""A head turn read without MediaPipe: dense optical flow from a rest frame to every other frame.

MediaPipe's face mesh is a learned prior as much as a measurement: on a warped photo, where a
turn shows as the nose gliding over the cheek without the occlusions and lighting of a real turn,
its landmarks may move less (or more) than the picture does. This reading needs no model: the
rest frame's own landmark positions (the actor's `landmarks_px`, or MediaPipe's on that one frame
only) are carried into each frame by dense optical flow (OpenCV's DIS, rest → frame), and the
same 2-D parallax as stages.motion.driving.face_geometry.nose_parallax is taken from them: the
nose tip's offset from the eye midpoint, along the eye line and across it, over the eye distance.

Where the flow is read: a Gaussian-weighted mean of the flow over a small disc around each point
(a flow vector at one pixel is noisy; the disc is a few percent of the eye distance, small
against how the field varies over a face).
"""

from __future__ import annotations

import cv2
import numpy as np

NOSE_TIP = 1
EYE_CORNERS = ((33, 133), (362, 263))
"""The same points as face_geometry.nose_parallax: the nose tip and each eye's two corners."""
POINTS = (NOSE_TIP,) + EYE_CORNERS[0] + EYE_CORNERS[1]
WINDOW_IOD = 0.04
"""σ of the disc the flow is averaged over at each point, in eye distances (≈ 4 px on a 512² actor)."""


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def _flow(rest_gray: np.ndarray, frame_gray: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow rest → frame: the rest frame's pixel p shows at p + flow(p) in `frame`."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(rest_gray, frame_gray, None)


def _read(flow: np.ndarray, points_px: np.ndarray, sigma_px: float) -> np.ndarray:
    """(P, 2) the flow's Gaussian-weighted mean over a disc of σ = sigma_px around each point."""
    h, w = flow.shape[:2]
    radius = int(np.ceil(3.0 * sigma_px))
    out = np.zeros((len(points_px), 2))
    for k, (x, y) in enumerate(points_px):
        x0, x1 = max(0, int(x) - radius), min(w, int(x) + radius + 2)
        y0, y1 = max(0, int(y) - radius), min(h, int(y) + radius + 2)
        gy, gx = np.mgrid[y0:y1, x0:x1]
        weight = np.exp(-((gx - x) ** 2 + (gy - y) ** 2) / (2.0 * sigma_px**2))
        out[k] = (flow[y0:y1, x0:x1] * weight[..., None]).sum(axis=(0, 1)) / weight.sum()
    return out


def parallax_of_points(points_px: np.ndarray) -> np.ndarray:
    """(T, 2) nose offset from the eye midpoint (along, across the eye line) over the eye
    distance, from (T, 5, 2) positions of POINTS (nose tip, then the four eye corners)."""
    pts = np.asarray(points_px, dtype=np.float64)
    centres = np.stack([(pts[:, 1] + pts[:, 2]) / 2, (pts[:, 3] + pts[:, 4]) / 2], axis=1)
    mid = centres.mean(axis=1)
    line = centres[:, 1] - centres[:, 0]
    iod = np.linalg.norm(line, axis=-1)
    along = line / iod[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], axis=-1)
    offset = pts[:, 0] - mid
    return np.stack([(offset * along).sum(-1), (offset * across).sum(-1)], axis=-1) / iod[:, None]


def track_points(frames: np.ndarray, rest_landmarks_px: np.ndarray, rest: int = 0) -> np.ndarray:
    """(T, 5, 2) where POINTS of frame `rest` (landmarks (≥468, ≥2) in its pixels) lie in each
    frame of `frames` ((T, H, W, 3) uint8), carried by the flow rest → frame."""
    start = np.asarray(rest_landmarks_px, dtype=np.float64)[list(POINTS), :2]
    left, right = start[1:3].mean(axis=0), start[3:5].mean(axis=0)
    sigma = WINDOW_IOD * float(np.linalg.norm(right - left))
    rest_gray = _gray(frames[rest])
    out = np.empty((len(frames), len(POINTS), 2))
    for t, frame in enumerate(frames):
        out[t] = start if t == rest else start + _read(_flow(rest_gray, _gray(frame)), start, sigma)
    return out


def flow_parallax(frames: np.ndarray, rest_landmarks_px: np.ndarray, rest: int = 0) -> np.ndarray:
    """(T, 2) the nose's 2-D parallax (face_geometry.nose_parallax's reading) of every frame,
    with the points carried from frame `rest` by optical flow instead of tracked by MediaPipe."""
    return parallax_of_points(track_points(frames, rest_landmarks_px, rest))
