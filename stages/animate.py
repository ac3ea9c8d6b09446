"""The Python API: `animate(source_image, driving_audio, …)` writes a talking-head clip in place."""

from __future__ import annotations

import hashlib

import numpy as np

from stages.errors import StageInputError
from stages.fit import fit_speech
from stages.types import FRAME_SIZE_PX, SAMPLE_RATE_HZ, Actor, Speech

_CHUNK_FRAMES = 48
"""Frames warped per call: 2 s of video, the same chunk the daemon uses."""


def _source_to_uint8_hwc(source_image: np.ndarray) -> np.ndarray:
    image = np.asarray(source_image)
    if image.shape == (3, FRAME_SIZE_PX, FRAME_SIZE_PX) and np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise StageInputError("source_image", "contains NaN or infinite values")
        return np.ascontiguousarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))
    if image.shape == (FRAME_SIZE_PX, FRAME_SIZE_PX, 3) and image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    raise StageInputError("source_image", f"expected float 3×{FRAME_SIZE_PX}×{FRAME_SIZE_PX} in [0,1] or uint8 "
                          f"{FRAME_SIZE_PX}×{FRAME_SIZE_PX}×3, got {image.dtype} {image.shape}")


def _output_buffer(output: np.ndarray | None, n_frames: int) -> np.ndarray:
    if output is None:
        return np.empty((n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX, 3), dtype=np.uint8)
    float_shape = (n_frames, 3, FRAME_SIZE_PX, FRAME_SIZE_PX)
    uint8_shape = (n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX, 3)
    if (output.shape, output.dtype) in ((float_shape, np.float32), (uint8_shape, np.uint8)):
        return output
    raise StageInputError("output", f"expected float32 {float_shape} or uint8 {uint8_shape}, "
                          f"got {output.dtype} {output.shape}")


def animate(source_image: np.ndarray, driving_audio: np.ndarray, expression_preset: str | list = "neutral",
            fps: int = 24, duration: float = 45, output: np.ndarray | None = None,
            seed: int | None = None) -> np.ndarray:
    """Animate `source_image` to speak `driving_audio`; return the frames (`output` when given).

    source_image: float 3×512×512 in [0,1] or uint8 512×512×3 RGB, with a human face.
    driving_audio: 24 kHz mono; longer than `duration` is truncated with a warning naming both
    lengths, shorter is padded with silence. expression_preset: a preset name or list (see
    stages.motion). output: float32 T×3×512×512 in [0,1] or uint8 T×512×512×3, written in place.
    The same inputs and seed give identical frames (seed None means 0).
    """
    from stages.image.face import detect_landmarks
    from stages.motion import normalize_expression, plan_motion
    from stages.warp.mesh import MeshWarpBackend

    image = _source_to_uint8_hwc(source_image)
    audio = np.asarray(driving_audio, dtype=np.float32)
    if audio.ndim != 1 or not np.isfinite(audio).all():
        raise StageInputError("driving_audio", f"expected finite 1-D mono samples at {SAMPLE_RATE_HZ} Hz, "
                              f"got shape {audio.shape}")
    n_frames = int(round(duration * fps))
    frames_out = _output_buffer(output, n_frames)
    actor = Actor(image=image, landmarks_px=detect_landmarks(image, field="source_image"),
                  crop_from_source=np.eye(2, 3), source="animate()",
                  source_sha256=hashlib.sha256(image.tobytes()).hexdigest())
    speech = fit_speech(Speech(audio=audio, phonemes=(), voice="external", backend="audio"), duration)
    plan = plan_motion(speech, normalize_expression(expression_preset, duration),
                       seed=0 if seed is None else seed, n_frames=n_frames, fps=fps)
    prepared = MeshWarpBackend().prepare(actor)
    prepared.prepare_motion(plan)  # the warp contract's per-plan step (nothing to do on the mesh)
    if frames_out.dtype == np.uint8:
        for start in range(0, n_frames, _CHUNK_FRAMES):
            prepared.render(plan, slice(start, min(start + _CHUNK_FRAMES, n_frames)), frames_out)
        return frames_out
    # Float layout: render a chunk into a small uint8 scratch slab, then convert into place.
    scratch = np.empty((_CHUNK_FRAMES, FRAME_SIZE_PX, FRAME_SIZE_PX, 3), dtype=np.uint8)
    for start in range(0, n_frames, _CHUNK_FRAMES):
        stop = min(start + _CHUNK_FRAMES, n_frames)
        prepared.render(plan.slice(slice(start, stop)), slice(0, stop - start), scratch)
        np.multiply(scratch[: stop - start].transpose(0, 3, 1, 2), 1.0 / 255.0,
                    out=frames_out[start:stop], dtype=np.float32)
    return frames_out
