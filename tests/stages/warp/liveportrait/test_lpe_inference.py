"""Load-time rewrites of W and G (BatchNorm folded, spectral norm frozen, hourglass padded):
the rewritten networks compute what the loaded ones compute."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from torch import nn  # noqa: E402

from stages.warp.liveportrait.checkpoints import build_networks  # noqa: E402
from stages.warp.liveportrait.inference import (TENSOR_CORE_CHANNELS, fold_batchnorm,  # noqa: E402
                                                freeze_spectral_norm, pad_hourglass_channels,
                                                prepare_for_inference)
from stages.warp.liveportrait.random_weights import random_state_dict  # noqa: E402
from stages.warp.liveportrait.random_weights import TINY  # noqa: E402


@pytest.fixture(scope="module")
def loaded():
    """TINY's W and G with random weights (BN statistics far from identity), in eval mode."""
    nets = build_networks(TINY)
    generator = torch.Generator().manual_seed(5)
    for module in (nets.warping, nets.spade):
        module.load_state_dict(random_state_dict(module, generator))
        module.eval()
    return nets.warping, nets.spade


@pytest.fixture(scope="module")
def inputs():
    """f_s, driving and source keypoints for a batch of 3 frames."""
    generator = torch.Generator().manual_seed(6)
    f_cfg = TINY.appearance_feature_extractor_params
    f_s = torch.randn(3, f_cfg.reshape_channel, f_cfg.reshape_depth, 16, 16, generator=generator)
    kp_s = 0.5 * torch.randn(3, 21, 3, generator=generator)
    return f_s, kp_s + 0.05 * torch.randn(3, 21, 3, generator=generator), kp_s


def _run(warping, spade, inputs):
    f_s, kp_d, kp_s = inputs
    with torch.inference_mode():
        warped = warping(f_s, kp_driving=kp_d, kp_source=kp_s)
        return warped, spade(warped["out"])


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal to float32 rounding: the reductions are re-ordered, the arithmetic is the same."""
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())), float((a - b).abs().max())


def test_rewritten_networks_compute_the_same_frames(loaded, inputs) -> None:
    """All three rewrites together: W's out, occlusion and deformation, and G's image agree."""
    warping, spade = copy.deepcopy(loaded)
    prepare_for_inference(warping, spade)
    (want_w, want_g), (got_w, got_g) = _run(*loaded, inputs), _run(warping, spade, inputs)
    for key in ("out", "occlusion_map", "deformation"):
        _close(got_w[key], want_w[key])
    _close(got_g, want_g)


def test_no_batchnorm_is_left_in_w_after_folding(loaded, inputs) -> None:
    """Every conv → BatchNorm pair of W is folded (W has one per block, plus compress and third)."""
    warping = copy.deepcopy(loaded[0])
    n_norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in warping.modules())
    assert fold_batchnorm(warping) == n_norms > 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in warping.modules())
    want, got = _run(loaded[0], loaded[1], inputs)[0], _run(warping, loaded[1], inputs)[0]
    _close(got["out"], want["out"])


def test_frozen_spectral_norm_is_bit_identical(loaded, inputs) -> None:
    """G with σ divided out once renders exactly the same numbers as G dividing on every call."""
    spade = copy.deepcopy(loaded[1])
    assert freeze_spectral_norm(spade) > 0
    warped = _run(loaded[0], loaded[1], inputs)[0]["out"]
    with torch.inference_mode():
        assert torch.equal(spade(warped), loaded[1](warped))


def test_hourglass_channels_become_tensor_core_multiples(loaded, inputs) -> None:
    """TINY's hourglass takes 66 channels and ends at 70: both are padded to multiples of 8, exactly."""
    warping = copy.deepcopy(loaded[0])
    fold_batchnorm(warping)
    dense = warping.dense_motion_network
    assert pad_hourglass_channels(dense) == 6
    first = dense.hourglass.encoder.down_blocks[0].conv
    last = dense.hourglass.decoder.conv
    for channels in (first.in_channels, last.out_channels, dense.mask.in_channels):
        assert channels % TENSOR_CORE_CHANNELS == 0, channels
    want, got = _run(loaded[0], loaded[1], inputs)[0], _run(warping, loaded[1], inputs)[0]
    for key in ("out", "occlusion_map", "deformation"):
        _close(got[key], want[key])


def test_padding_refuses_an_unfolded_hourglass(loaded) -> None:
    """A BatchNorm after the widened output would turn its zero channels into non-zero ones."""
    with pytest.raises(ValueError, match="fold BatchNorm"):
        pad_hourglass_channels(copy.deepcopy(loaded[0]).dense_motion_network)


def test_full_size_hourglass_convolutions_are_all_tensor_core_multiples() -> None:
    """At the release's size (110 in, 142 out) every padded convolution lands on a multiple of 8."""
    from stages.warp.liveportrait.config import FULL

    warping = build_networks(FULL, device="meta").warping
    fold_batchnorm(warping)
    dense = warping.dense_motion_network
    assert dense.hourglass.encoder.down_blocks[0].conv.in_channels == 110
    assert pad_hourglass_channels(dense) == 2
    convs = [m for m in dense.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    odd = [(m.in_channels, m.out_channels) for m in convs if m.in_channels % TENSOR_CORE_CHANNELS]
    assert odd == [], odd
    assert dense.hourglass.decoder.conv.out_channels == 144
