"""Network building blocks behave as the official ones: warp quirk, spectral norm, LN, purity."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="LivePortrait networks need torch")
nnf = torch.nn.functional

from stages.warp.liveportrait.appearance import AppearanceFeatureExtractor  # noqa: E402
from stages.warp.liveportrait.checkpoints import load_strict  # noqa: E402
from stages.warp.liveportrait.random_weights import random_state_dict  # noqa: E402
from stages.warp.liveportrait.config import SpadeConfig  # noqa: E402
from stages.warp.liveportrait.motion_extractor import LayerNorm2d  # noqa: E402
from stages.warp.liveportrait.spade import SPADEDecoder, SpectralNormConv2d  # noqa: E402
from stages.warp.liveportrait.warping import WarpingNetwork, identity_grid  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _loaded(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return load_strict(module, random_state_dict(module, _gen(seed)), type(module).__name__)


@pytest.fixture(scope="module")
def small(lp_cases: dict):
    """The small configs of the shared vectors."""
    from stages.warp.liveportrait.config import small_config_from_cases
    return small_config_from_cases(lp_cases)


def test_identity_grid_is_not_an_identity_warp() -> None:
    """Sampling ones with the identity grid keeps the centre but leaves 1/8 in each corner voxel."""
    grid = identity_grid(16, 64, 64, torch.zeros(()))
    assert grid[0, 0, 0].tolist() == [-1, -1, -1] and grid[15, 63, 0].tolist() == [-1, 1, 1]
    ones = torch.ones(1, 1, 16, 64, 64)
    out = nnf.grid_sample(ones, grid[None], align_corners=False)[0, 0]
    assert out[0, 0, 0].item() == pytest.approx(1 / 8)
    assert out[8, 32, 32].item() == pytest.approx(1.0)


def test_warp_with_equal_keypoints_uses_identity_deformation(small) -> None:
    """With kp_driving = kp_source every candidate motion is the identity, so the mix is too."""
    w = _loaded(WarpingNetwork(small.warping_module_params))
    feat = torch.rand(1, 4, 16, 32, 32, generator=_gen(1))  # depth must be reshape_depth; H, W may shrink
    kp = (torch.rand(1, 21, 3, generator=_gen(2)) - 0.5) * 1.5
    with torch.inference_mode():
        out = w(feat, kp_driving=kp, kp_source=kp)
    grid = identity_grid(16, 32, 32, feat)
    assert torch.allclose(out["deformation"][0], grid, atol=1e-5)
    assert out["occlusion_map"].shape == (1, 1, 32, 32) and out["out"].shape == (1, 16, 32, 32)
    assert ((out["occlusion_map"] > 0) & (out["occlusion_map"] < 1)).all()


def test_forwards_do_not_modify_inputs(small) -> None:
    """F and W leave their input tensors unchanged."""
    f = _loaded(AppearanceFeatureExtractor(small.appearance_feature_extractor_params))
    w = _loaded(WarpingNetwork(small.warping_module_params), 1)
    image = torch.rand(1, 3, 128, 128, generator=_gen(3))
    kp_s = torch.rand(1, 21, 3, generator=_gen(4)) - 0.5
    kp_d = kp_s + 0.05
    copies = [t.clone() for t in (image, kp_s, kp_d)]
    with torch.inference_mode():
        feat = f(image)
        keep = feat.clone()
        w(feat, kp_driving=kp_d, kp_source=kp_s)
    assert all(torch.equal(a, b) for a, b in zip((image, kp_s, kp_d), copies)) and torch.equal(feat, keep)


def test_spectral_norm_matches_torch_eval_with_stored_vectors() -> None:
    """Our conv equals torch.nn.utils.spectral_norm in eval with the same weight_orig, u, v."""
    ours = _loaded(SpectralNormConv2d(6, 5, kernel_size=3, padding=1))
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(6, 5, 3, padding=1))
    ref.load_state_dict(ours.state_dict())
    ref.eval()
    x = torch.randn(2, 6, 9, 9, generator=_gen(5))
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_spectral_norm_never_updates_its_vectors() -> None:
    """Even in train mode a forward keeps the stored u and v (no power iteration)."""
    conv = _loaded(SpectralNormConv2d(4, 4, kernel_size=3, padding=1)).train()
    u, v = conv.weight_u.clone(), conv.weight_v.clone()
    with torch.no_grad():
        conv(torch.randn(1, 4, 8, 8, generator=_gen(6)))
    assert torch.equal(conv.weight_u, u) and torch.equal(conv.weight_v, v)


def test_layernorm2d_is_channel_layernorm() -> None:
    """Channels-first LN equals layer_norm over C of the NHWC view (eps 1e-6)."""
    ln = _loaded(LayerNorm2d(7))
    x = torch.randn(2, 7, 5, 5, generator=_gen(7)) * 3 + 1
    ref = nnf.layer_norm(x.permute(0, 2, 3, 1), (7,), ln.weight, ln.bias, eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)


@pytest.mark.parametrize("upscale,scale,conv_key", [(2, 8, "conv_img.0.weight"), (1, 4, "conv_img.weight")])
def test_decoder_output_size_and_range(upscale: int, scale: int, conv_key: str) -> None:
    """G upsamples 4× (8× with the PixelShuffle head) and ends in [0, 1]."""
    g = SPADEDecoder(SpadeConfig(upscale=upscale, block_expansion=4, max_features=8, num_down_blocks=2,
                                 out_channels=4))
    assert conv_key in g.state_dict()
    g = _loaded(g)
    with torch.inference_mode():
        img = g(torch.randn(1, 8, 8, 8, generator=_gen(8)))
    assert img.shape == (1, 3, 8 * scale, 8 * scale)
    assert img.min() >= 0 and img.max() <= 1
