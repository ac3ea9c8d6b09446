"""The gather-based 5-D sampler equals torch's grid_sample, and W can be switched to it without change."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch", reason="the sampler is torch code")
nnf = torch.nn.functional

from stages.errors import StageInputError  # noqa: E402
from stages.warp.liveportrait.grid_sample3d import GridSample3d, grid_sample3d  # noqa: E402
from stages.warp.liveportrait.sampling import active_sampler, gather_sampling, sample_volume  # noqa: E402
from stages.warp.liveportrait.warping import identity_grid  # noqa: E402


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return nnf.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.mark.parametrize("volume_shape, grid_shape, span", [
    ((2, 3, 5, 7, 9), (2, 4, 6, 8, 3), 1.0),      # inside the volume
    ((2, 3, 5, 7, 9), (2, 4, 6, 8, 3), 1.6),      # a third of the points fall outside (zero padding)
    ((3, 1, 2, 2, 2), (3, 9, 1, 5, 3), 1.8),      # 2-voxel axes: every point near or past an edge
    ((1, 4, 16, 32, 32), (1, 16, 32, 32, 3), 1.1),  # LivePortrait-like volume
])
def test_matches_torch_grid_sample(volume_shape, grid_shape, span) -> None:
    """On random volumes and grids, in range or not, the result equals F.grid_sample to 1e-6."""
    volume = torch.randn(*volume_shape, generator=_gen(0))
    grid = (torch.rand(*grid_shape, generator=_gen(1)) * 2 - 1) * span
    ours, theirs = grid_sample3d(volume, grid), _reference(volume, grid)
    assert ours.shape == theirs.shape == (volume_shape[0], volume_shape[1], *grid_shape[1:4])
    assert (ours - theirs).abs().max().item() <= 1e-6
    if span > 1:
        outside = (grid.abs() > 1 + 1 / min(volume_shape[2:])).any(-1)  # beyond the half-voxel rim
        assert outside.any() and ours.permute(0, 2, 3, 4, 1)[outside].abs().max().item() == 0.0


def test_identity_grid_quirk_corner_voxel_is_one_eighth() -> None:
    """Sampling with LivePortrait's identity grid keeps the centre and leaves 1/8 of each corner voxel."""
    volume = torch.rand(1, 2, 16, 64, 64, generator=_gen(2)) + 0.5
    grid = identity_grid(16, 64, 64, volume)[None]
    ours = grid_sample3d(volume, grid)
    assert torch.allclose(ours[..., 0, 0, 0], volume[..., 0, 0, 0] / 8, rtol=0, atol=1e-7)
    assert torch.allclose(ours[..., -1, -1, -1], volume[..., -1, -1, -1] / 8, rtol=0, atol=1e-7)
    assert (ours - _reference(volume, grid)).abs().max().item() <= 1e-6


def test_axes_are_x_width_y_height_z_depth() -> None:
    """A point at a voxel centre returns that voxel: grid (x, y, z) indexes (W, H, D)."""
    d, h, w = 3, 4, 5
    volume = torch.arange(d * h * w, dtype=torch.float32).reshape(1, 1, d, h, w)

    def centre(i: int, n: int) -> float:
        return (2 * i + 1) / n - 1

    k, j, i = 2, 1, 3
    grid = torch.tensor([centre(i, w), centre(j, h), centre(k, d)]).reshape(1, 1, 1, 1, 3)
    assert grid_sample3d(volume, grid).item() == volume[0, 0, k, j, i].item()


def test_non_finite_and_huge_coordinates_give_zero() -> None:
    """NaN, ±inf and 1e20 coordinates sample zero (as torch does) instead of reading out of bounds."""
    volume = torch.rand(1, 2, 4, 4, 4, generator=_gen(3)) + 1
    bad = torch.tensor([[float("nan"), 0, 0], [0, float("inf"), 0], [0, 0, -float("inf")], [1e20, 0, 0],
                        [-3e9, 2e9, 0]])
    grid = bad.reshape(1, 1, 1, 5, 3)
    ours = grid_sample3d(volume, grid)
    assert torch.equal(ours, torch.zeros_like(ours))
    assert torch.equal(ours.abs(), _reference(volume, grid).abs())


def test_half_volume_keeps_float32_coordinates() -> None:
    """A half-precision volume and grid are sampled at float32 positions (error only from fp16 values)."""
    volume = torch.rand(1, 3, 8, 64, 64, generator=_gen(4))
    grid = torch.rand(1, 8, 64, 64, 3, generator=_gen(5)) * 2 - 1
    ours = grid_sample3d(volume.half(), grid.half())
    assert ours.dtype == torch.float16
    exact = _reference(volume, grid.half().float())  # the same (fp16-rounded) positions, in float32
    assert (ours.float() - exact).abs().max().item() < 2e-3


@pytest.mark.parametrize("volume_shape, grid_shape, field", [
    ((2, 3, 4, 4), (2, 4, 4, 4, 3), "grid_sample3d.volume"),
    ((2, 3, 4, 4, 4), (2, 4, 4, 4, 2), "grid_sample3d.grid"),
    ((2, 3, 4, 4, 4), (1, 4, 4, 4, 3), "grid_sample3d.grid"),
])
def test_bad_shapes_name_the_argument(volume_shape, grid_shape, field) -> None:
    """A wrong rank, coordinate count or batch raises StageInputError naming the argument."""
    with pytest.raises(StageInputError) as err:
        grid_sample3d(torch.zeros(volume_shape), torch.zeros(grid_shape))
    assert err.value.field == field


def test_sample_volume_defaults_to_native_and_switches_in_context() -> None:
    """sample_volume is F.grid_sample by default; gather_sampling swaps the sampler and restores it."""
    volume = torch.randn(2, 3, 4, 5, 6, generator=_gen(6))
    grid = torch.rand(2, 3, 4, 5, 3, generator=_gen(7)) * 2.4 - 1.2
    assert active_sampler() is None
    assert torch.equal(sample_volume(volume, grid), _reference(volume, grid))
    calls = []

    def spy(v, g):
        calls.append(v.shape)
        return grid_sample3d(v, g)

    with pytest.raises(RuntimeError):
        with gather_sampling(spy):
            assert (sample_volume(volume, grid) - _reference(volume, grid)).abs().max().item() <= 1e-6
            raise RuntimeError("leaving the block by an exception")
    assert calls == [volume.shape] and active_sampler() is None


def test_switch_is_local_to_the_thread() -> None:
    """A thread rendering while another thread exports keeps torch's native sampler."""
    seen = []
    with gather_sampling(GridSample3d()):
        worker = threading.Thread(target=lambda: seen.append(active_sampler()))
        worker.start()
        worker.join()
        assert isinstance(active_sampler(), GridSample3d)
    assert seen == [None]


def test_warping_network_is_unchanged_by_the_switch(lp_dir, two_threads) -> None:
    """W on the shared vectors gives the same output with the gather sampler as with F.grid_sample."""
    from stages.warp.liveportrait.export import load_vectors_folder

    W, _, inputs = load_vectors_folder(lp_dir)
    # One sample, cropped to 32×32 (W is fully convolutional in H, W) to keep the test fast.
    feature, kp_driving, kp_source = inputs[0][:1, :, :, :32, :32], inputs[1][:1], inputs[2][:1]
    with torch.inference_mode():
        native = W(feature, kp_driving=kp_driving, kp_source=kp_source)
        with gather_sampling():
            gathered = W(feature, kp_driving=kp_driving, kp_source=kp_source)
    for key in ("out", "deformation", "occlusion_map"):
        assert (native[key] - gathered[key]).abs().max().item() <= 1e-6, key
