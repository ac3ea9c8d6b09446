"""A driving clip is read in the prepare step (M over its face crops, batched), never in the warp.

Tiny random weights and a 20-frame cut of a real clip: these check when the clip is read and that
the frames are the ones the warp made when it read the clip itself, not how the face looks.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")

from stages.motion import plan_motion  # noqa: E402
from stages.motion.driving import load_driving  # noqa: E402
from stages.motion.driving.fit import clip_positions  # noqa: E402
from stages.motion.planner import driving_gains  # noqa: E402
from stages.types import DrivingSource, MotionPlan, Speech  # noqa: E402
from stages.warp.base import MotionNotPrepared  # noqa: E402
from stages.warp.liveportrait.backend import LivePortraitBackend, PreparedLivePortrait  # noqa: E402
from stages.warp.liveportrait.driving import plan_ratios, retarget_and_stitch, template_posed  # noqa: E402
from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints  # noqa: E402
from stages.warp.liveportrait.templates import resample  # noqa: E402
from stages.warp.liveportrait.video_template import template_from_video  # noqa: E402
from tests.support.short_clip import SHARED_DRIVING, first_frames_clip  # noqa: E402

SHARED_CLIP = SHARED_DRIVING / "d12.mp4"
pytestmark = pytest.mark.skipif(not SHARED_CLIP.exists(), reason="needs ../shared/driving")
CLIP_FRAMES = 20
"""The cut's length: two M batches (16 + 4), so batching shows, and seconds of tracking, not tens."""
SLOT_FRAMES = 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first CLIP_FRAMES frames of a real talking-head clip, re-encoded at its 25 fps."""
    return first_frames_clip(SHARED_CLIP, tmp_path_factory.mktemp("clip") / "cut.mp4", CLIP_FRAMES)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random LivePortrait weights in the official layout."""
    root = tmp_path_factory.mktemp("lp")
    write_random_checkpoints(root, TINY, seed=8)
    return root


@pytest.fixture
def backend(weights: Path) -> LivePortraitBackend:
    """A fresh backend for each test: nothing of another test's clips kept."""
    return LivePortraitBackend(weights, device="cpu", chunk_frames=4, config=TINY)


def _speech() -> Speech:
    rate = 24_000
    t = np.arange(rate // 2) / rate
    audio = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 3.0 * t) > 0)).astype(np.float32)
    return Speech(audio=audio, phonemes=(), voice="test", backend="test", sample_rate_hz=rate)


def _driven_plan(clip: Path, mode: str, n_frames: int = SLOT_FRAMES) -> MotionPlan:
    """A plan made from the clip, carrying it as the daemon's make_plan does."""
    plan = plan_motion(_speech(), "neutral", seed=0, n_frames=n_frames, driving=load_driving(clip), driving_mode=mode)
    sha256 = hashlib.sha256(clip.read_bytes()).hexdigest()
    return dataclasses.replace(plan, driving=DrivingSource(clip, sha256, mode))


class _MotionCalls:
    """The batch size of every call into M (the networks' real motion extractor, observed by a
    forward hook), for as long as the `with` block runs."""

    def __init__(self, backend: LivePortraitBackend) -> None:
        self.module, self.batches = backend.networks.motion, []

    def __enter__(self) -> list[int]:
        self.handle = self.module.register_forward_hook(lambda _m, args, _o: self.batches.append(args[0].shape[0]))
        return self.batches

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_the_clip_is_read_in_prepare_batched_and_render_only_looks_it_up(backend, astronaut, clip) -> None:
    """prepare_motion runs M over every frame's crop in batches and keeps the fit; rendering the
    slot, in several calls, runs M not once more and keeps nothing new; preparing again reads nothing."""
    prepared = backend.prepare(astronaut)
    plan = _driven_plan(clip, "pose")
    assert backend.driving_clips.prepared_fits() == []
    with _MotionCalls(backend) as in_prepare:
        prepared.prepare_motion(plan)
    assert in_prepare == [16, 4]  # every frame of the clip, 16 crops a call
    kept = backend.driving_clips.prepared_fits()
    assert kept == [(plan.driving.key, SLOT_FRAMES, plan.fps)]
    slab = np.zeros((SLOT_FRAMES, 512, 512, 3), np.uint8)
    with _MotionCalls(backend) as in_render:
        prepared.render(plan, slice(0, 5), slab)
        prepared.render(plan, slice(5, SLOT_FRAMES), slab)
        prepared.prepare_motion(plan)  # a second prepare of the same plan: kept, nothing read
    assert in_render == [] and backend.driving_clips.prepared_fits() == kept
    assert slab.any()


def test_rendering_a_driven_plan_that_was_not_prepared_is_refused_naming_the_step(backend, astronaut,
                                                                                  clip) -> None:
    """Without prepare_motion the warp does not read the clip itself: MotionNotPrepared names the
    step to call, M never runs and the slab is untouched. A plan of another length is another fit."""
    prepared = backend.prepare(astronaut)
    plan = _driven_plan(clip, "full")
    slab = np.zeros((SLOT_FRAMES, 512, 512, 3), np.uint8)
    with _MotionCalls(backend) as calls:
        with pytest.raises(MotionNotPrepared, match=r"prepare_motion\(plan\)") as refused:
            prepared.render(plan, slice(0, 4), slab)
    assert calls == [] and not slab.any() and "cut.mp4" in str(refused.value)
    prepared.prepare_motion(plan)
    prepared.render(plan, slice(0, 4), slab)
    with pytest.raises(MotionNotPrepared):  # prepared for 12 frames, not for 8
        prepared.render(_driven_plan(clip, "full", n_frames=8), slice(0, 4), slab)


def _old_flow(prepared: PreparedLivePortrait, plan: MotionPlan, clip: Path, mode: str, out: np.ndarray) -> None:
    """The frames as the warp made them before the clip moved to the prepare step: the clip read by
    M (template_from_video) and fitted inside render, then posed exactly as that code posed it."""
    backend = prepared.backend
    template = template_from_video(backend.networks, clip, backend.device)
    fitted = resample(template, clip_positions(template.n_frames, template.fps, plan.n_frames, plan.fps), plan.fps)
    head_gain, shift_gain = driving_gains(plan)
    pose = mode == "pose"

    def keypoints_for(rows: np.ndarray) -> torch.Tensor:
        x_d = template_posed(prepared.source, fitted, rows, keep_source_lips=pose,
                             gains=(head_gain[rows], shift_gain[rows]))
        lip = None
        if pose:
            lip = torch.as_tensor(plan_ratios(plan.slice(rows), prepared.source.ratios, backend.calibration)[0],
                                  device=x_d.device)
        return retarget_and_stitch(backend.networks, prepared.source, x_d, lip_ratio=lip)
    prepared._render_chunks(0, plan.n_frames, out, keypoints_for)


@pytest.mark.parametrize("mode", ["pose", "full"])
def test_prepare_then_render_gives_the_frames_the_warp_made_reading_the_clip_itself(backend, astronaut, clip,
                                                                                      mode) -> None:
    """Same inputs, same bytes: moving the clip's reading out of the warp changed when, not what."""
    prepared = backend.prepare(astronaut)
    plan = _driven_plan(clip, mode)
    before = np.zeros((SLOT_FRAMES, 512, 512, 3), np.uint8)
    _old_flow(prepared, plan, clip, mode, before)
    after = np.zeros_like(before)
    prepared.prepare_motion(plan)
    prepared.render(plan, slice(0, 7), after)
    prepared.render(plan, slice(7, SLOT_FRAMES), after)
    assert before.any() and np.array_equal(after, before)


def test_a_clip_is_read_once_by_content_and_a_fit_let_go_is_refused_not_read_again(tmp_path: Path,
                                                                                   shared_dir: Path) -> None:
    """The same bytes under another name are one clip (read once); with room for one fit, the
    older fit is let go, and asking the warp for it is refused, never read there."""
    from stages.warp.liveportrait.driving_clips import DrivingClips
    from stages.warp.liveportrait.templates import load_template

    original = shared_dir / "motion_templates" / "talking.npz"
    renamed = tmp_path / "renamed.npz"
    renamed.write_bytes(original.read_bytes())
    sha256 = hashlib.sha256(original.read_bytes()).hexdigest()
    reads: list[Path] = []
    clips = DrivingClips(lambda path: reads.append(path) or load_template(path), kept=1)
    first, again = DrivingSource(original, sha256, "pose"), DrivingSource(renamed, sha256, "full")
    fit = clips.prepare(first, 48, 24)
    assert fit.n_frames == 48 and clips.fitted(again, 48, 24) is fit and reads == [original]
    clips.prepare(again, 24, 24)
    assert reads == [original] and clips.prepared_fits() == [(first.key, 24, 24)]
    with pytest.raises(MotionNotPrepared, match="48-frame plan"):
        clips.fitted(first, 48, 24)
    assert reads == [original]
