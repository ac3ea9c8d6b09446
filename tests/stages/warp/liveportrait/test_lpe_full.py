"""Full-size LivePortrait on the CPU: the official checkpoint layout loads strictly and renders a slot.

Full-size W+G costs ≈ 15 s per frame on 2 CPU cores, so the slot here is 4 frames.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from stages.types import MotionPlan  # noqa: E402
from stages.warp.liveportrait.backend import LivePortraitBackend  # noqa: E402
from stages.warp.liveportrait.random_weights import write_random_checkpoints  # noqa: E402
from stages.warp.liveportrait.config import FULL  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_weights(tmp_path_factory: pytest.TempPathFactory):
    """A full-size random-weight set in the official layout (≈ 520 MB, deleted afterwards)."""
    root = tmp_path_factory.mktemp("lp_full_engine")
    write_random_checkpoints(root, FULL, seed=5)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_full_size_slot_renders_end_to_end_on_cpu(full_weights) -> None:
    """Strict load, prepare, then 4 frames (2 chunks) rendered in place; background outside the face kept."""
    from stages.image import load_actor

    actor = load_actor()
    backend = LivePortraitBackend(full_weights, device="cpu", chunk_frames=2, config=FULL)
    prepared = backend.prepare(actor)
    assert prepared.bound.f_s.shape == (1, 32, 16, 64, 64)
    assert prepared.source.x_s.shape == (1, 21, 3)

    n = 6
    i = np.arange(n, dtype=np.float32)
    zeros = np.zeros(n, np.float32)
    plan = MotionPlan(fps=24, jaw_open=np.clip(0.3 * i, 0, 1), lip_width=zeros, lip_round=zeros, lips_closed=zeros,
                      blink=(i == 3).astype(np.float32), eye_wide=zeros, brow=zeros, smile=zeros,
                      head_yaw_deg=1.5 * i, head_pitch_deg=zeros, head_roll_deg=zeros, shift_x_px=zeros,
                      shift_y_px=zeros)
    slab = np.full((n, 512, 512, 3), 3, np.uint8)
    address = slab.__array_interface__["data"][0]
    start = time.perf_counter()
    prepared.render(plan, slice(1, 5), slab)
    per_frame_s = (time.perf_counter() - start) / 4
    print(f"full-size W+G+paste on CPU: {per_frame_s:.1f} s/frame (chunks of 2)")

    assert slab.__array_interface__["data"][0] == address
    assert (slab[0] == 3).all() and (slab[5] == 3).all()
    outside = prepared.paste_mask == 0
    for k in range(1, 5):
        assert np.array_equal(slab[k][outside], actor.image[outside])
        assert slab[k][~outside].std() > 1.0
    assert not np.array_equal(slab[1], slab[4])
