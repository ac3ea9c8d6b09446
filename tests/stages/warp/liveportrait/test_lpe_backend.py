"""The LivePortrait backend end to end on a tiny network config: slab in place, chunks, templates, errors.

The tiny config has the official structure (21 keypoints, the full-size MLPs, every block type)
with few channels and a 16² feature map, so a frame renders in tens of milliseconds on the CPU;
test_lpe_full.py runs the full-size networks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from stages.errors import StageInputError  # noqa: E402
from stages.registry import load_backend_class  # noqa: E402
from stages.types import Actor, MotionPlan  # noqa: E402
from stages.warp.liveportrait.backend import LivePortraitBackend  # noqa: E402
from stages.warp.liveportrait.calibration import CALIBRATION  # noqa: E402
from stages.warp.liveportrait.checkpoints import CheckpointError  # noqa: E402
from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints  # noqa: E402
from stages.warp.liveportrait.templates import MotionTemplate, fit_to_slot, load_template  # noqa: E402

CURVES = ("jaw_open", "lip_width", "lip_round", "lips_closed", "blink", "eye_wide", "brow", "smile",
          "head_yaw_deg", "head_pitch_deg", "head_roll_deg", "shift_x_px", "shift_y_px")

def make_plan(n: int, **curves: object) -> MotionPlan:
    """A plan of n frames, every curve 0 unless given."""
    values = {k: np.zeros(n, np.float32) for k in CURVES}
    for k, v in curves.items():
        values[k] = np.broadcast_to(np.asarray(v, np.float32), (n,)).copy()
    return MotionPlan(fps=24, **values)


def speaking_plan(n: int) -> MotionPlan:
    """Jaw, blink and head motion that change every frame."""
    i = np.arange(n)
    return make_plan(n, jaw_open=0.5 + 0.5 * np.sin(i), blink=(i % 4 == 2) * 1.0, head_yaw_deg=2.0 * i,
                     head_pitch_deg=-1.0 * i, shift_x_px=0.5 * i, smile=0.3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread (two threads spin on barriers when the CPU is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight checkpoint set in the official file layout."""
    root = tmp_path_factory.mktemp("lp_tiny")
    write_random_checkpoints(root, TINY, seed=21)
    return root


@pytest.fixture(scope="module")
def backend(weights: Path) -> LivePortraitBackend:
    """The backend on the CPU with 3-frame chunks."""
    return LivePortraitBackend(weights, device="cpu", chunk_frames=3, config=TINY)


@pytest.fixture(scope="module")
def actor() -> Actor:
    """The built-in astronaut actor."""
    from stages.image import load_actor

    return load_actor()


@pytest.fixture(scope="module")
def prepared(backend: LivePortraitBackend, actor: Actor):
    """The astronaut prepared once."""
    return backend.prepare(actor)


def test_registry_names_the_backend() -> None:
    """BACKENDS['warp']['liveportrait'] resolves to this class, whose name is 'liveportrait'."""
    cls = load_backend_class("warp", "liveportrait")
    assert cls is LivePortraitBackend and cls.name == "liveportrait"


def test_render_writes_the_slab_in_place_and_keeps_the_background(prepared, actor: Actor) -> None:
    """Frames 2–6 are rendered into the same buffer; others untouched; pixels outside the mask are the actor's."""
    slab = np.full((8, 512, 512, 3), 7, np.uint8)
    address = slab.__array_interface__["data"][0]
    prepared.render(speaking_plan(8), slice(2, 7), slab)
    assert slab.__array_interface__["data"][0] == address
    for i in (0, 1, 7):
        assert (slab[i] == 7).all()
    outside, inside = prepared.paste_mask == 0, prepared.paste_mask > 0.99
    for i in range(2, 7):
        assert np.array_equal(slab[i][outside], actor.image[outside])
        assert np.abs(slab[i][inside].astype(int) - actor.image[inside]).mean() > 1.0  # the face was re-rendered
    for a, b in zip(range(2, 6), range(3, 7)):
        assert not np.array_equal(slab[a], slab[b])  # the motion changes every frame


def test_render_is_deterministic_and_independent_of_chunking(prepared) -> None:
    """The same plan renders the same bytes, whether in one call or split at arbitrary frames."""
    plan = speaking_plan(5)
    one, again, split = (np.zeros((5, 512, 512, 3), np.uint8) for _ in range(3))
    prepared.render(plan, slice(0, 5), one)
    prepared.render(plan, slice(0, 5), again)
    prepared.render(plan, slice(0, 1), split)
    prepared.render(plan, slice(1, 5), split)
    assert np.array_equal(one, again)
    # Chunks sit at absolute frame multiples and always have the full shape: bytes, not ≤ 1 level.
    assert np.array_equal(one, split)


def test_a_chunk_of_three_equals_three_single_frames(weights: Path, prepared, actor: Actor) -> None:
    """Batched W+G gives the frames that batch-1 W+G gives (to one level of rounding)."""
    single = LivePortraitBackend(weights, device="cpu", chunk_frames=1, config=TINY).prepare(actor)
    plan = speaking_plan(3)
    batched, alone = np.zeros((3, 512, 512, 3), np.uint8), np.zeros((3, 512, 512, 3), np.uint8)
    prepared.render(plan, slice(0, 3), batched)
    single.render(plan, slice(0, 3), alone)
    assert np.abs(batched.astype(int) - alone.astype(int)).max() <= 1


def test_a_motion_template_drives_the_frames(prepared, shared_dir: Path) -> None:
    """talking.npz renders distinct frames; its frame 0 (the reference) renders like a plan holding the source."""
    template = fit_to_slot(load_template(shared_dir / "motion_templates" / "talking.npz"), 24, 5)
    slab, rest = np.zeros((5, 512, 512, 3), np.uint8), np.zeros((1, 512, 512, 3), np.uint8)
    prepared.render_template(template, slice(0, 5), slab)
    cal = CALIBRATION  # the jaw_open that asks for the source's own lip ratio: no retargeting at all
    jaw = (prepared.source.ratios.lip - cal.lip_ratio_closed) / (cal.lip_ratio_open - cal.lip_ratio_closed)
    assert 0 < jaw < 1
    prepared.render(make_plan(1, jaw_open=jaw), slice(0, 1), rest)
    assert np.abs(slab[0].astype(int) - rest[0].astype(int)).max() <= 1
    for a in range(4):
        assert not np.array_equal(slab[a], slab[a + 1])


def test_prepared_actors_can_alternate(backend: LivePortraitBackend, prepared, actor: Actor) -> None:
    """Rendering another actor in between does not change what the first one renders."""
    flipped = Actor(np.ascontiguousarray(actor.image[:, ::-1]), actor.landmarks_px * [-1, 1, 1] + [511, 0, 0],
                    actor.crop_from_source, "flipped", "x")
    other = backend.prepare(flipped)
    plan = speaking_plan(2)
    first, second, other_out = (np.zeros((2, 512, 512, 3), np.uint8) for _ in range(3))
    prepared.render(plan, slice(0, 2), first)
    other.render(plan, slice(0, 2), other_out)
    prepared.render(plan, slice(0, 2), second)
    assert np.array_equal(first, second) and not np.array_equal(first, other_out)


def test_bad_calls_name_the_field(prepared, backend: LivePortraitBackend, actor: Actor, weights: Path,
                                  tmp_path: Path) -> None:
    """Wrong slab, out-of-range frames, NaN curves, short templates, bad images, no CUDA, no weights."""
    slab = np.zeros((4, 512, 512, 3), np.uint8)
    cases = [
        (lambda: prepared.render(make_plan(4), slice(0, 4), slab.astype(np.float32)), "out"),
        (lambda: prepared.render(make_plan(6), slice(0, 6), slab), "frames"),
        (lambda: prepared.render(make_plan(4, jaw_open=np.nan), slice(0, 4), slab), "plan.jaw_open"),
        (lambda: prepared.render_template(fit_to_slot(_short_template(), 24, 2), slice(0, 4), slab),
         "motion.template"),
        (lambda: backend.prepare(Actor(actor.image[:256], actor.landmarks_px, actor.crop_from_source, "x", "y")),
         "actor.image"),
    ]
    if not torch.cuda.is_available():
        cases.append((lambda: LivePortraitBackend(weights, device="cuda", config=TINY), "warp.device"))
    for call, field in cases:
        with pytest.raises(StageInputError) as err:
            call()
        assert err.value.field == field
    with pytest.raises(CheckpointError):
        LivePortraitBackend(tmp_path, config=TINY)


def _short_template():
    """A 2-frame template at rest."""
    return MotionTemplate(fps=24.0, scale=np.ones((2, 1), np.float32), exp=np.zeros((2, 21, 3), np.float32),
                          R=np.tile(np.eye(3, dtype=np.float32), (2, 1, 1)), t=np.zeros((2, 3), np.float32))
