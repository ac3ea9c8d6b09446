"""The chunk engine's speed paths on the CPU: compiled W and G render what eager renders, an fp16
chunk that is not finite is rendered again in fp32, and the chunk size follows measured memory."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from vram import StageMemoryExceeded  # noqa: E402
from stages.warp.liveportrait.backend import LivePortraitBackend  # noqa: E402
from stages.warp.liveportrait.chunk_size import PeakModel, over_budget  # noqa: E402
from stages.warp.liveportrait.driving import plan_keypoints  # noqa: E402
from stages.warp.liveportrait.engine import ChunkEngine, EngineOptions  # noqa: E402
from stages.warp.liveportrait.random_weights import write_random_checkpoints  # noqa: E402
from stages.warp.liveportrait.random_weights import TINY  # noqa: E402
from tests.stages.warp.liveportrait.test_lpe_backend import speaking_plan  # noqa: E402

CHUNK = 2


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LivePortraitBackend:
    """TINY with random weights on the CPU, 2-frame chunks."""
    root = tmp_path_factory.mktemp("lp_engine")
    write_random_checkpoints(root, TINY, seed=8)
    return LivePortraitBackend(root, device="cpu", chunk_frames=CHUNK, config=TINY)


@pytest.fixture(scope="module")
def prepared(backend: LivePortraitBackend):
    """The built-in astronaut prepared once."""
    from stages.image import load_actor

    return backend.prepare(load_actor())


@pytest.fixture(scope="module")
def keypoints(backend: LivePortraitBackend, prepared) -> torch.Tensor:
    """Driving keypoints of one whole chunk of a speaking plan."""
    with torch.inference_mode():
        return plan_keypoints(backend.networks, prepared.source, speaking_plan(CHUNK), backend.calibration)


def _render(backend: LivePortraitBackend, prepared, keypoints: torch.Tensor, options: EngineOptions,
            networks=None) -> tuple[np.ndarray, ChunkEngine]:
    """One chunk through a fresh engine with `options` (and other W and G when given)."""
    warping, spade = networks or (backend.networks.warping, backend.networks.spade)
    engine = ChunkEngine(warping, spade, backend.device, backend._feature_shape, TINY.warping_module_params.num_kp,
                         (512, 512), options)
    engine.bind(prepared.bound)
    out = np.zeros((CHUNK, 512, 512, 3), np.uint8)
    engine.run_chunk(keypoints, slice(0, CHUNK), out)
    return out, engine


def test_fp16_chunk_that_overflows_is_rendered_again_in_fp32(backend, prepared, keypoints) -> None:
    """W's output pushed past fp16's range (×1e6: finite in fp32) would paste a black face; the
    engine notices, renders the chunk in fp32 and counts it: the frames are the fp32 frames."""
    warping, spade = copy.deepcopy(backend.networks.warping), backend.networks.spade
    with torch.no_grad():
        warping.fourth.weight.mul_(1e6)
        warping.fourth.bias.mul_(1e6)
    want, _ = _render(backend, prepared, keypoints, EngineOptions(CHUNK), (warping, spade))
    got, engine = _render(backend, prepared, keypoints, EngineOptions(CHUNK, half=True), (warping, spade))
    assert engine.fp32_rerenders == 1
    assert np.array_equal(got, want)
    got_again, engine_again = _render(backend, prepared, keypoints, EngineOptions(CHUNK, half=True), (warping, spade))
    assert engine_again.fp32_rerenders == 1 and np.array_equal(got_again, want)


def test_a_finite_fp16_chunk_is_kept(backend, prepared, keypoints) -> None:
    """Normal weights: the fp16 render stands (no re-render) and is within fp16 error of fp32."""
    fp32, _ = _render(backend, prepared, keypoints, EngineOptions(CHUNK))
    fp16, engine = _render(backend, prepared, keypoints, EngineOptions(CHUNK, half=True))
    assert engine.fp32_rerenders == 0
    diff = np.abs(fp16.astype(int) - fp32.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


@pytest.mark.slow
def test_compiled_w_and_g_render_the_eager_frames(backend, prepared, keypoints, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile'd W and G (inductor, CPU) give eager's frames within a grey level, and the
    compiler's cache lands in the configured folder (what a restart reuses)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, _ = _render(backend, prepared, keypoints, EngineOptions(CHUNK))
    compiled, _ = _render(backend, prepared, keypoints, EngineOptions(CHUNK, compile=True))
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1
    assert any((tmp_path / "inductor").rglob("*"))


def test_peak_model_picks_the_largest_chunk_that_fits() -> None:
    """Peaks of 1.0 and 1.2 GiB at 1 and 2 frames: 0.8 GiB fixed + 0.2 GiB a frame → 13 frames fit 3.5 GiB."""
    gib = 2**30
    model = PeakModel.fit({1: int(1.0 * gib), 2: int(1.2 * gib)})
    assert model.per_frame_bytes == pytest.approx(0.2 * gib, abs=1)
    chunk = model.largest_chunk(int(3.5 * gib), limit=64)
    assert chunk == 13
    assert model.peak_bytes(chunk) <= 3.5 * gib < model.peak_bytes(chunk + 1)
    assert model.largest_chunk(int(3.5 * gib), limit=8) == 8
    assert model.largest_chunk(int(0.9 * gib), limit=64) == 0


def test_over_budget_error_names_the_setting_and_the_figures() -> None:
    """The start-up refusal says which region, how much is needed and how much there is."""
    error = over_budget(5 * 2**30, 3584 * 2**20, 16)
    assert isinstance(error, StageMemoryExceeded) and error.region == "liveportrait"
    assert "5.00 GiB" in str(error) and "3.50 GiB" in str(error) and "16-frame" in str(error)
