"""The LivePortrait warp backend: official checkpoints, audio-driven keypoints, batched W+G.

    backend = LivePortraitBackend(weights_dir, device="cuda", chunk_frames=8)
    prepared = backend.prepare(actor)            # F and M on the source crop, once per actor
    prepared.prepare_motion(plan)                # a driving clip: M over its crops, fitted (prepare stage)
    prepared.render(plan, slice(0, 96), slab)    # driving keypoints → W+G → paste-back into slab

`weights_dir` holds the official release layout (config.CHECKPOINT_PATHS; either the repo root or
its `pretrained_weights` folder), loaded strictly. prepare() crops the actor's face the way
LivePortrait expects (pasteback.face_crop), runs F (appearance volume f_s) and M (pose,
expression, keypoints), and precomputes the paste-back maps. prepare_motion() reads a driven
plan's clip (plan.driving) into the fit render() uses. render() turns plan frames into
driving keypoints (driving.plan_keypoints, one batched call), then the chunk engine renders them
into the slab in place. render_template() does the same from a motion template instead of a plan.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stages.errors import StageInputError
from stages.memory import load_in_region
from stages.motion.planner import driving_gains
from stages.types import FRAME_SIZE_PX, Actor, DrivingSource, MotionPlan
from stages.warp.liveportrait import keypoints as kpm
from stages.warp.liveportrait.calibration import CALIBRATION, Calibration
from stages.warp.liveportrait.checkpoints import LivePortraitNetworks, load_networks
from stages.warp.liveportrait.chunk_size import PROBE_CHUNKS, PeakModel, over_budget
from stages.warp.liveportrait.config import FULL, LivePortraitConfig
from stages.warp.liveportrait.driving import (SourceMotion, face_ratios, plan_keypoints, plan_ratios,
                                              retarget_and_stitch, source_motion, template_keypoints,
                                              template_posed)
from stages.warp.liveportrait.driving_clips import DrivingClips
from stages.warp.liveportrait.engine import BoundSource, ChunkEngine, EngineOptions
from stages.warp.liveportrait.inference import prepare_for_inference
from stages.warp.base import check_slab, validate_plan
from stages.warp.liveportrait.pasteback import CROP_SIZE_PX, FaceCrop, check_frame, face_crop, paste_maps
from stages.warp.liveportrait.templates import MotionTemplate, load_template
from vram import CudaStagePool, StageMemoryExceeded, StagePool, make_stage_pool, reference_plan


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

    def prepare_motion(self, plan: MotionPlan) -> None:
        """Read a driven plan's clip (plan.driving) into the fit render() uses: a video through M
        on its face crops, batched, in this stage's region; kept by the backend. Call it in the
        prepare stage, once the plan is made; a plan without a clip needs nothing."""
        if plan.driving is not None:
            self.backend.prepare_driving(plan.driving, plan.n_frames, plan.fps)

    def render(self, plan: MotionPlan, frames: slice, out: np.ndarray) -> None:
        """Write frames `frames` of `plan` into `out[frames]` (the whole (n, 512, 512, 3) uint8 slab).

        A plan made with a driving clip (plan.driving) is rendered from the clip's own LivePortrait
        motion, as prepare_motion(plan) fitted it to the slot (MotionNotPrepared if it was not: the
        warp never reads a clip); in "pose" mode the lips keep the source's expression and follow
        the plan's speech. Any other plan is rendered from its curves.
        """
        start, stop = validate_plan(plan, frames)
        check_slab(out, stop)
        keypoints_for = (self._driven_keypoints(plan, plan.driving) if plan.driving is not None
                         else self._plan_keypoints(plan))
        self._render_chunks(start, stop, out, keypoints_for)

    def _plan_keypoints(self, plan: MotionPlan) -> Callable[[np.ndarray], torch.Tensor]:
        nets, calibration = self.backend.networks, self.backend.calibration
        return lambda rows: plan_keypoints(nets, self.source, plan.slice(rows), calibration)

    def _driven_keypoints(self, plan: MotionPlan, driving: DrivingSource) -> Callable[[np.ndarray], torch.Tensor]:
        nets, calibration = self.backend.networks, self.backend.calibration
        fitted = self.backend.driving_clips.fitted(driving, plan.n_frames, plan.fps)
        pose = driving.mode == "pose"
        head_gain, shift_gain = driving_gains(plan)

        def keypoints_for(rows: np.ndarray) -> torch.Tensor:
            x_d = template_posed(self.source, fitted, rows, keep_source_lips=pose,
                                 gains=(head_gain[rows], shift_gain[rows]))
            lip = None
            if pose:
                lip = torch.as_tensor(plan_ratios(plan.slice(rows), self.source.ratios, calibration)[0],
                                      device=x_d.device)
            return retarget_and_stitch(nets, self.source, x_d, lip_ratio=lip)
        return keypoints_for

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
        engine, memory = self.backend.engine, self.backend.memory
        with engine.lock, memory:
            # The chunks run one call deeper: should the region refuse an allocation, the pool
            # frees every tensor of that finished frame, and this one holds none.
            self._run_chunks(engine, start, stop, out, keypoints_for)
        # Once per call, not per chunk: on CUDA the check reads the pool's segments (the host
        # ledger has already refused any allocation over the budget as it happened).
        memory.check("render")

    def _run_chunks(self, engine: ChunkEngine, start: int, stop: int, out: np.ndarray,
                    keypoints_for: Callable[[np.ndarray], torch.Tensor]) -> None:
        b = engine.chunk_frames
        engine.bind(self.bound)
        for chunk_start in range(start - start % b, stop, b):
            rows = np.clip(np.arange(chunk_start, chunk_start + b), start, stop - 1)
            lo, hi = max(start, chunk_start), min(stop, chunk_start + b)
            with torch.inference_mode():
                x_d = keypoints_for(rows)
            engine.run_chunk(x_d, slice(lo - chunk_start, hi - chunk_start), out[lo:hi])


DEFAULT_BUDGET_BYTES = reference_plan().region("liveportrait").budget_bytes
"""LivePortrait's region in the reference plan, 3.5 GiB: weights, the bound actor, one chunk's step."""
MAX_CHUNK_FRAMES = 64
CPU_CHUNK_FRAMES = 8
"""The largest chunk on the CPU: memory is not what limits it there, and 8 amortises."""


def _load_for_inference(weights_dir: Path, config: LivePortraitConfig, device: torch.device) -> LivePortraitNetworks:
    networks = load_networks(weights_dir, config, device)
    prepare_for_inference(networks.warping, networks.spade)
    return networks


class LivePortraitBackend:
    """LivePortrait warp: F and M once per actor, then W+G per frame in batched chunks."""

    name = "liveportrait"

    def __init__(self, weights_dir: Path, device: str = "cpu", chunk_frames: int | None = 8,
                 config: LivePortraitConfig = FULL, calibration: Calibration = CALIBRATION,
                 cuda_graph: bool = True, compile: bool = True, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 compile_cache_dir: Path | None = None, memory: StagePool | None = None) -> None:
        """`memory` is the stage's region (the daemon's arena gives one); without it the backend makes
        its own of `budget_bytes`. Weights, actors and every step's working memory come from it, and
        `chunk_frames=None` picks the largest chunk whose measured peak fits it.

        On CUDA the engine runs fp16, with W and G compiled (`compile`; the compiler's cache in
        `compile_cache_dir`, so a restart reuses it) and the step captured as a CUDA graph.
        """
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise StageInputError("warp.device", "CUDA was asked for but torch sees no CUDA device", device=device)
        if chunk_frames is not None and not 1 <= chunk_frames <= MAX_CHUNK_FRAMES:
            raise StageInputError("warp.chunk_frames", f"must be 1…{MAX_CHUNK_FRAMES}", chunk_frames=chunk_frames)
        if compile_cache_dir is not None:
            # Inductor reads its cache folder from the environment at each compile.
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir)
        self.device = dev
        self.config = config
        self.calibration = calibration
        self.memory = memory if memory is not None else make_stage_pool("liveportrait", budget_bytes, dev,
                                                                        high_priority=True)
        self.budget_bytes = self.memory.budget_bytes
        self.networks: LivePortraitNetworks = load_in_region(
            self.memory, lambda: _load_for_inference(weights_dir, config, dev),
            lambda networks: networks.modules_by_role().values())
        f_cfg = config.appearance_feature_extractor_params
        side = CROP_SIZE_PX // 2 ** f_cfg.num_down_blocks
        self._feature_shape = (f_cfg.reshape_channel, f_cfg.reshape_depth, side, side)
        self._graph_and_compile = (cuda_graph, compile)
        self.driving_clips = DrivingClips(self._read_driving)
        """Driving clips' templates and their fits to slots, made by prepare_driving."""
        self.peak_model: PeakModel | None = None
        """The measured per-chunk memory model, when the chunk was chosen from the budget."""
        self.engine = self._engine(chunk_frames or self._chunk_for_budget())

    def _engine(self, chunk_frames: int, plain: bool = False) -> ChunkEngine:
        """A chunk engine of `chunk_frames` (`plain`: eager and uncaptured, for memory probes)."""
        graph, compile = (False, False) if plain else self._graph_and_compile
        graph_pool = self.memory.pool.id if isinstance(self.memory, CudaStagePool) else None
        with self.memory:
            return ChunkEngine(self.networks.warping, self.networks.spade, self.device, self._feature_shape,
                               self.config.warping_module_params.num_kp, (FRAME_SIZE_PX, FRAME_SIZE_PX),
                               EngineOptions.for_device(self.device, chunk_frames, graph, compile), graph_pool)

    def _chunk_for_budget(self) -> int:
        """The largest chunk whose step fits the region, from two probe steps measured in it (at most
        8 on the CPU, where memory is not what limits the chunk and 8 amortises)."""
        peaks = {}
        for b in PROBE_CHUNKS:
            try:
                probe = self._engine(b, plain=True)
                peaks[b] = self.memory.measure_peak(probe.step)
            except StageMemoryExceeded as exc:  # the region refused the probe outright
                if not peaks:
                    raise over_budget(exc.used_bytes, self.budget_bytes, b) from None
                return min(peaks)
            finally:
                probe = None
        self.peak_model = PeakModel.fit(peaks)
        limit = MAX_CHUNK_FRAMES if self.device.type == "cuda" else CPU_CHUNK_FRAMES
        chunk = self.peak_model.largest_chunk(self.budget_bytes, limit)
        if chunk == 0:
            raise over_budget(self.peak_model.peak_bytes(1), self.budget_bytes, 1)
        return chunk

    @property
    def fp32_rerenders(self) -> int:
        """Chunks rendered again in fp32 because their fp16 render was not finite."""
        return self.engine.fp32_rerenders

    def measure_peak_bytes(self) -> int:
        """The region's peak over one chunk step as it will serve (compiles and captures it if not
        done yet); raises StageMemoryExceeded (the liveportrait region) when over budget."""
        peak = self.memory.measure_peak(self.engine.step)
        if peak > self.budget_bytes:
            raise over_budget(peak, self.budget_bytes, self.engine.chunk_frames)
        return peak

    def driving_template(self, path: Path) -> MotionTemplate:
        """The LivePortrait motion of the driving clip at `path` (kept, by path: a prepared plan's
        clip is kept by content): a template file as it is, a video through M on its face crops."""
        return self.driving_clips.template(DrivingSource(path, None, "full"))

    def prepare_driving(self, source: DrivingSource, n_frames: int, fps: int) -> MotionTemplate:
        """The prepare stage's work for a driven plan: the clip read (M batched over its face
        crops, in this stage's region) and fitted to a slot of `n_frames` at `fps`; kept for
        render, which only looks it up."""
        fitted = self.driving_clips.prepare(source, n_frames, fps)
        self.memory.check("prepare")
        return fitted

    def _read_driving(self, path: Path) -> MotionTemplate:
        """A clip's whole template: a template file as it is, a video through M on its face crops."""
        if path.suffix.lower() == ".npz":
            return load_template(path)
        from stages.warp.liveportrait.video_template import template_from_video

        with self.memory:
            return template_from_video(self.networks, path, self.device)

    def prepare(self, actor: Actor) -> PreparedLivePortrait:
        """Crop the face, run F and M on it once, and precompute the paste-back maps."""
        with self.memory:
            prepared = self._prepare(actor)
        self.memory.check("prepare")
        return prepared

    def _prepare(self, actor: Actor) -> PreparedLivePortrait:
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
