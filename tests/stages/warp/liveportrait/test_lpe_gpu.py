"""GPU paths of the chunk engine: fp16 autocast and CUDA-graph replay (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from stages.errors import StageInputError  # noqa: E402
from stages.warp.liveportrait import engine as engine_module  # noqa: E402
from stages.warp.liveportrait.engine import ChunkEngine, EngineOptions  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)")


def test_options_choose_fp16_compile_and_graphs_on_cuda_only() -> None:
    """CUDA gets fp16 autocast + compiled W and G + graph replay; the CPU runs fp32 eagerly."""
    cuda = EngineOptions.for_device(torch.device("cuda"), 8)
    cpu = EngineOptions.for_device(torch.device("cpu"), 8)
    assert cuda.half and cuda.cuda_graph and cuda.compile
    assert not cpu.half and not cpu.cuda_graph and not cpu.compile
    assert not EngineOptions.for_device(torch.device("cuda"), 8, cuda_graph=False).cuda_graph
    assert not EngineOptions.for_device(torch.device("cuda"), 8, compile=False).compile
    assert engine_module.GRAPH_WARMUP_STEPS >= 1


def test_a_cuda_graph_is_refused_on_the_cpu() -> None:
    """Asking for a CUDA graph on the CPU is a clear error, not a silent fallback."""
    from stages.warp.liveportrait.checkpoints import build_networks
    from stages.warp.liveportrait.random_weights import TINY

    nets = build_networks(TINY)
    with pytest.raises(StageInputError) as err:
        ChunkEngine(nets.warping, nets.spade, torch.device("cpu"), (8, 4, 8, 8), 21, (512, 512),
                    EngineOptions(2, cuda_graph=True))
    assert err.value.field == "warp.device"


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_fp16_matches_cpu_fp32(tmp_path: Path, astronaut) -> None:
    """Graph replay in fp16 renders what the CPU renders in fp32 (within fp16 error), graph captured once."""
    from stages.warp.liveportrait.backend import LivePortraitBackend
    from stages.warp.liveportrait.random_weights import write_random_checkpoints
    from stages.warp.liveportrait.random_weights import TINY
    from tests.stages.warp.liveportrait.test_lpe_backend import speaking_plan

    write_random_checkpoints(tmp_path, TINY, seed=4)
    actor = astronaut
    plan = speaking_plan(5)
    gpu = LivePortraitBackend(tmp_path, device="cuda", chunk_frames=2, config=TINY)
    cpu = LivePortraitBackend(tmp_path, device="cpu", chunk_frames=2, config=TINY)
    on_gpu, on_cpu = np.zeros((5, 512, 512, 3), np.uint8), np.zeros((5, 512, 512, 3), np.uint8)
    prepared = gpu.prepare(actor)
    prepared.prepare_motion(plan)
    prepared.render(plan, slice(0, 5), on_gpu)
    graph = gpu.engine._graph
    assert graph is not None
    prepared.render(plan, slice(0, 5), on_gpu)
    assert gpu.engine._graph is graph  # replayed, not recaptured
    on_cpu_prepared = cpu.prepare(actor)
    on_cpu_prepared.prepare_motion(plan)
    on_cpu_prepared.render(plan, slice(0, 5), on_cpu)
    diff = np.abs(on_gpu.astype(int) - on_cpu.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8


@pytest.mark.gpu
@needs_cuda
def test_full_size_auto_chunk_fits_the_budget_and_renders_identically_twice(tmp_path: Path, astronaut) -> None:
    """Full-size random weights, chunk chosen from measured memory: the serving step's peak stays
    within 3.5 GiB, and the same plan renders the same bytes twice (compiled, graph-replayed)."""
    from stages.warp.liveportrait.backend import DEFAULT_BUDGET_BYTES, LivePortraitBackend
    from stages.warp.liveportrait.random_weights import write_random_checkpoints
    from tests.stages.warp.liveportrait.test_lpe_backend import speaking_plan

    write_random_checkpoints(tmp_path, seed=4)
    backend = LivePortraitBackend(tmp_path, device="cuda", chunk_frames=None,
                                  compile_cache_dir=tmp_path / "inductor")
    assert backend.peak_model is not None and backend.engine.chunk_frames >= 1
    assert backend.measure_peak_bytes() <= DEFAULT_BUDGET_BYTES
    prepared = backend.prepare(astronaut)
    plan = speaking_plan(40)
    prepared.prepare_motion(plan)
    first, second = np.zeros((40, 512, 512, 3), np.uint8), np.zeros((40, 512, 512, 3), np.uint8)
    prepared.render(plan, slice(0, 40), first)
    prepared.render(plan, slice(0, 40), second)
    assert np.array_equal(first, second)
    assert backend.fp32_rerenders == 0
    # The weights (531 MiB) and the captured graph live in the warp's MemPool region, within budget.
    assert backend.memory.used_bytes() >= 500 * 2**20
    assert backend.memory.peak_bytes() <= DEFAULT_BUDGET_BYTES


@pytest.mark.gpu
@needs_cuda
def test_a_render_over_its_cuda_region_fails_naming_the_region(tmp_path: Path, astronaut) -> None:
    """A region just above what the weights take: loading, preparing or rendering fails with
    StageMemoryExceeded naming "liveportrait" (on CUDA the check reads what the pool holds)."""
    from stages.warp.liveportrait.backend import LivePortraitBackend
    from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints
    from tests.stages.warp.liveportrait.test_lpe_backend import speaking_plan
    from vram import StageMemoryExceeded, make_stage_pool

    write_random_checkpoints(tmp_path, TINY, seed=4)
    roomy = LivePortraitBackend(tmp_path, device="cuda", chunk_frames=8, config=TINY, cuda_graph=False, compile=False)
    weights_bytes = roomy.memory.used_bytes()
    region = make_stage_pool("liveportrait", weights_bytes + 2**20, "cuda")
    with pytest.raises(StageMemoryExceeded, match="'liveportrait' is over its budget"):
        tight = LivePortraitBackend(tmp_path, device="cuda", chunk_frames=8, config=TINY, cuda_graph=False,
                                    compile=False, memory=region)
        tight.prepare(astronaut).render(speaking_plan(16), slice(0, 16), np.zeros((16, 512, 512, 3), np.uint8))
