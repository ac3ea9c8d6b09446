"""LivePortrait driven by a video: M on the clip's crops, relative mode, lips on the speech in pose mode.

Tiny random weights: these check what the code does with the clip (which frames, which keypoints
move), not how the face looks; that needs the official weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")

from stages.motion import plan_motion  # noqa: E402
from stages.motion.driving import load_driving  # noqa: E402
from stages.types import DrivingSource, Speech  # noqa: E402
from stages.warp.liveportrait.backend import LivePortraitBackend  # noqa: E402
from stages.warp.liveportrait.driving import LIP_KEYPOINTS, template_posed  # noqa: E402
from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints  # noqa: E402

CLIP = Path(__file__).resolve().parents[5] / "shared" / "driving" / "d12.mp4"
pytestmark = pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/driving")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LivePortraitBackend:
    """LivePortrait with tiny random weights on the CPU."""
    root = tmp_path_factory.mktemp("lp")
    write_random_checkpoints(root, TINY, seed=8)
    return LivePortraitBackend(root, device="cpu", chunk_frames=4, config=TINY)


def _speech(jaw_hz: float) -> Speech:
    rate = 24_000
    t = np.arange(2 * rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * jaw_hz * t) > 0)).astype(np.float32)
    return Speech(audio=audio, phonemes=(), voice="test", backend="test", sample_rate_hz=rate)


def test_m_reads_every_frame_of_the_clip_into_a_template(backend: LivePortraitBackend) -> None:
    """One template frame per video frame, at the video's rate, with rotations and per-frame ratios."""
    template = backend.driving_template(CLIP)
    assert template.n_frames == 183 and template.fps == 25.0
    assert np.allclose(template.R @ template.R.transpose(0, 2, 1), np.eye(3), atol=1e-4)
    assert template.eye_close_ratio.shape == (183, 2) and template.lip_close_ratio.shape == (183, 1)
    assert backend.driving_template(CLIP) is template  # M runs once per clip


def test_pose_mode_keeps_the_lips_for_the_speech(backend: LivePortraitBackend, astronaut) -> None:
    """In pose mode the clip moves every expression keypoint except the lips', which the speech's
    lip retargeting moves instead; in full mode the clip moves the lips too."""
    prepared = backend.prepare(astronaut)
    template = backend.driving_template(CLIP)
    rows = np.arange(40, 48)
    pose = template_posed(prepared.source, template, rows, keep_source_lips=True)
    full = template_posed(prepared.source, template, rows)
    still_lips = template.exp.copy()
    still_lips[:, list(LIP_KEYPOINTS)] = template.exp[0, list(LIP_KEYPOINTS)]
    expected = template_posed(prepared.source, dataclasses.replace(template, exp=still_lips), rows)
    assert torch.equal(pose, expected)  # everything of the clip but its lips
    assert not torch.allclose(full[:, list(LIP_KEYPOINTS)], pose[:, list(LIP_KEYPOINTS)])


def test_a_driven_plan_renders_from_the_clip_and_its_mouth_from_the_speech(backend: LivePortraitBackend,
                                                                          astronaut) -> None:
    """The same clip with two speeches: frames differ (the mouth follows each speech) yet each is
    reproducible; without the clip the same plan renders other frames (the clip drives the pose)."""
    prepared = backend.prepare(astronaut)
    motion = load_driving(CLIP)
    slab = np.zeros((24, 512, 512, 3), np.uint8)

    def render(speech: Speech, driving=motion) -> np.ndarray:
        plan = plan_motion(speech, "neutral", seed=0, n_frames=24, driving=driving)
        if driving is not None:
            plan = dataclasses.replace(plan, driving=DrivingSource(CLIP, None, "pose"))
        prepared.prepare_motion(plan)
        prepared.render(plan, slice(0, 24), slab)
        return slab.copy()

    slow, fast = render(_speech(2.0)), render(_speech(5.0))
    assert np.array_equal(render(_speech(2.0)), slow)
    assert not np.array_equal(slow, fast)
    assert not np.array_equal(render(_speech(2.0), driving=None), slow)


def test_preset_gains_scale_the_clips_head_movement(backend: LivePortraitBackend, astronaut) -> None:
    """Gains of 1 pose the head as the clip does; gains of 0 hold it at the clip's first pose (the
    expression still moves): the presets scale the clip's motion on LivePortrait as on the mesh."""
    source = backend.prepare(astronaut).source
    template = backend.driving_template(CLIP)
    rows = np.arange(60, 66)
    ones, zeros = np.ones(len(rows)), np.zeros(len(rows))
    assert torch.allclose(template_posed(source, template, rows, gains=(ones, ones)),
                          template_posed(source, template, rows), atol=1e-5)
    still = dataclasses.replace(template, R=np.repeat(template.R[:1], template.n_frames, axis=0),
                                t=np.repeat(template.t[:1], template.n_frames, axis=0))
    assert torch.allclose(template_posed(source, template, rows, gains=(zeros, zeros)),
                          template_posed(source, still, rows), atol=1e-5)
