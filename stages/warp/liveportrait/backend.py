"""The LivePortrait warp backend: official checkpoints, audio-driven keypoints, batched W+G.

    backend = LivePortraitBackend(weights_dir, device="cuda", chunk_frames=8)
    prepared = backend.prepare(actor)            # F and M on the source crop, once per actor
    prepared.render(plan, slice(0, 96), slab)    # driving keypoints → W+G → paste-back into slab

`weights_dir` holds the official release layout (config.CHECKPOINT_PATHS; either the repo root or
its `pretrained_weights` folder), loaded strictly. prepare() crops the actor's face the way
LivePortrait expects (pasteback.face_crop), runs F (appearance volume f_s) and M (pose,
expression, keypoints), and precomputes the paste-back maps. render() turns plan frames into
driving keypoints (driving.plan_keypoints, one batched call), then the chunk engine renders them
into the slab in place. render_template() does the same from a motion template instead of a plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX, Actor, MotionPlan
from stages.warp.liveportrait import keypoints as kpm
from stages.warp.liveportrait.calibration import CALIBRATION, Calibration
from stages.warp.liveportrait.checkpoints import LivePortraitNetworks, load_networks
from stages.warp.liveportrait.config import FULL, LivePortraitConfig
from stages.warp.liveportrait.driving import (SourceMotion, face_ratios, plan_keypoints, source_motion,
                                              template_keypoints)
from stages.warp.liveportrait.engine import BoundSource, ChunkEngine, EngineOptions
from stages.warp.liveportrait.inference import prepare_for_inference
from stages.warp.base import check_slab, validate_plan
from stages.warp.liveportrait.pasteback import CROP_SIZE_PX, FaceCrop, check_frame, face_crop, paste_maps
from stages.warp.liveportrait.templates import MotionTemplate


@dataclass(frozen=True)
class PreparedLivePortrait:
    """An actor made ready for LivePortrait: its crop, f_s, source motion and paste-back maps."""

    backend: "LivePortraitBackend" = field(repr=False)
    crop: FaceCrop
    source: SourceMotion = field(repr=False)
    bound: BoundSource = field(repr=False)

    @property
    def paste_mask(self) -> np.ndarray:
        """(512, 512) float32 blend weight of the rendered face; 0 keeps the actor frame exactly."""
        return self.bound.maps.mask

    def render(self, plan: MotionPlan, frames: slice, out: np.ndarray) -> None:
        """Write frames `frames` of `plan` into `out[frames]` (the whole (n, 512, 512, 3) uint8 slab)."""
        start, stop = validate_plan(plan, frames)
        check_slab(out, stop)
        nets, calibration = self.backend.networks, self.backend.calibration
        self._render_chunks(start, stop, out,
                            lambda rows: plan_keypoints(nets, self.source, plan.slice(rows), calibration))

    def render_template(self, template: MotionTemplate, frames: slice, out: np.ndarray) -> None:
        """Write frames `frames` driven by a motion template (already fitted to the slot) into `out`."""
        start, stop, step = frames.indices(out.shape[0] if isinstance(out, np.ndarray) else 0)
        check_slab(out, stop)
        if step != 1:
            raise StageInputError("frames", "only contiguous frame ranges can be rendered", step=step)
        if stop > template.n_frames:
            raise StageInputError("motion.template", "the template is shorter than the frames asked for "
                                  "(fit it to the slot first)", template_frames=template.n_frames, stop=stop)
        nets = self.backend.networks
        self._render_chunks(start, stop, out, lambda rows: template_keypoints(nets, self.source, template, rows))

    def _render_chunks(self, start: int, stop: int, out: np.ndarray,
                       keypoints_for: Callable[[np.ndarray], torch.Tensor]) -> None:
        """Render [start, stop) in chunks aligned to absolute frame indices, each of the full shape.

        Kernels (the MLPs' matmuls, W's and G's convolutions) may round a batch row differently
        by the batch's size and the row's place in it; with chunks at multiples of chunk_frames
        and rows outside the request repeating its nearest frame, a frame renders the same bytes
        however the caller splits the slot.
        """
        engine = self.backend.engine
        b = engine.chunk_frames
        with engine.lock:
            engine.bind(self.bound)
            for chunk_start in range(start - start % b, stop, b):
                rows = np.clip(np.arange(chunk_start, chunk_start + b), start, stop - 1)
                lo, hi = max(start, chunk_start), min(stop, chunk_start + b)
                with torch.inference_mode():
                    x_d = keypoints_for(rows)
                engine.run_chunk(x_d, slice(lo - chunk_start, hi - chunk_start), out[lo:hi])


class LivePortraitBackend:
    """LivePortrait warp: F and M once per actor, then W+G per frame in batched chunks."""

    name = "liveportrait"

    def __init__(self, weights_dir: Path, device: str = "cpu", chunk_frames: int = 8,
                 config: LivePortraitConfig = FULL, calibration: Calibration = CALIBRATION,
                 cuda_graph: bool = True) -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise StageInputError("warp.device", "CUDA was asked for but torch sees no CUDA device", device=device)
        if chunk_frames < 1:
            raise StageInputError("warp.chunk_frames", "must be at least 1", chunk_frames=chunk_frames)
        self.device = dev
        self.config = config
        self.calibration = calibration
        self.networks: LivePortraitNetworks = load_networks(weights_dir, config, dev)
        prepare_for_inference(self.networks.warping, self.networks.spade)
        f_cfg = config.appearance_feature_extractor_params
        side = CROP_SIZE_PX // 2 ** f_cfg.num_down_blocks
        feature_shape = (f_cfg.reshape_channel, f_cfg.reshape_depth, side, side)
        self.engine = ChunkEngine(self.networks.warping, self.networks.spade, dev, feature_shape,
                                  config.warping_module_params.num_kp, (FRAME_SIZE_PX, FRAME_SIZE_PX),
                                  EngineOptions.for_device(dev, chunk_frames, cuda_graph))

    def prepare(self, actor: Actor) -> PreparedLivePortrait:
        """Crop the face, run F and M on it once, and precompute the paste-back maps."""
        image = check_frame(actor.image)
        crop = face_crop(actor.landmarks_px)
        pixels = torch.from_numpy(crop.crop(image)).to(self.device)
        source_image = (pixels.permute(2, 0, 1)[None].float() / 255.0).clamp_(0.0, 1.0)
        nets = self.networks
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.engine.options.half):
            f_s = nets.appearance(source_image).float()
            raw = {k: v.float() for k, v in nets.motion(source_image).items()}
        with torch.inference_mode():
            info = kpm.refine_kp_info(raw)
            source = source_motion(nets, info, face_ratios(actor.landmarks_px), crop.shift_to_keypoints())
        return PreparedLivePortrait(self, crop, source, BoundSource(f_s, source.x_s, paste_maps(crop, image)))
