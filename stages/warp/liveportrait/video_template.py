"""A driving video as LivePortrait sees it: the motion extractor M on every frame's face crop.

One pass over the video: each frame is decoded, its face tracked (MediaPipe), cropped the way
LivePortrait crops (pasteback.face_crop) and batched through M; the refined pose, expression,
translation and scale become a MotionTemplate at the video's frame rate, with the eye and lip
ratios of every frame from its landmarks — what the official pipeline extracts from a driving
video before animating, so the relative-mode machinery (templates, stitching) drives it as is.
A frame where the tracker loses the face reuses the last crop (submit has already refused videos
without a face in most frames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stages.errors import StageInputError
from stages.motion.driving.video import DRIVING_FIELD, frame_step, open_video, tracked_frames
from stages.warp.liveportrait import keypoints as kpm
from stages.warp.liveportrait.checkpoints import LivePortraitNetworks
from stages.warp.liveportrait.driving import face_ratios
from stages.warp.liveportrait.pasteback import face_crop
from stages.warp.liveportrait.templates import MotionTemplate

BATCH_FRAMES = 16
"""Crops per M call: amortises the call on a GPU, and M's activations stay small (~40 MB at fp32)."""


def _motion_batch(nets: LivePortraitNetworks, crops: list[np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    pixels = torch.from_numpy(np.stack(crops)).to(device).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        info = kpm.refine_kp_info({k: v.float() for k, v in nets.motion(pixels).items()})
        rotation_t = kpm.get_rotation_matrix(info["pitch"], info["yaw"], info["roll"])
    return {"R": rotation_t, "exp": info["exp"], "t": info["t"], "scale": info["scale"]}


def template_from_video(nets: LivePortraitNetworks, path: str | Path, device: torch.device) -> MotionTemplate:
    """The motion template M extracts from every frame of the driving video at `path`."""
    path = Path(path)
    parts: list[dict[str, torch.Tensor]] = []
    crops: list[np.ndarray] = []
    eye, lip = [], []
    last = None
    with open_video(path) as (container, stream, fps):
        step = frame_step(fps)  # the frames the mesh path reads too, so both see the same clip
        for rgb, landmarks in tracked_frames(path, container, stream, step):
            last = landmarks if landmarks is not None else last
            if last is None:
                continue  # no face yet: the clip starts at its first tracked frame
            crops.append(face_crop(last, DRIVING_FIELD).crop(rgb))
            ratios = face_ratios(last)
            eye.append((ratios.eye_left, ratios.eye_right))
            lip.append((ratios.lip,))
            if len(crops) == BATCH_FRAMES:
                parts.append(_motion_batch(nets, crops, device))
                crops = []
    if crops:
        parts.append(_motion_batch(nets, crops, device))
    if not parts:
        raise StageInputError(DRIVING_FIELD, f"{path.name}: no frame with a face to drive from")

    def stacked(key: str) -> np.ndarray:
        return torch.cat([part[key] for part in parts]).cpu().numpy().astype(np.float32)

    return MotionTemplate(fps / step, stacked("scale").reshape(-1, 1), stacked("R"), stacked("exp"),
                          stacked("t"), np.asarray(eye, np.float32), np.asarray(lip, np.float32), str(path))
