"""Load-time rewrites of W and G for inference: the same function, fewer and friendlier kernels.

Each rewrite changes how the networks compute, never what (up to float rounding):

- `fold_batchnorm`: an eval-mode BatchNorm after a convolution is an affine map per channel, so
  it folds into that convolution's weight and bias (W has eight such pairs; one kernel and one
  pass over the activations fewer each).
- `freeze_spectral_norm`: G's spectrally normalised convolutions divide their weight by σ on
  every call (a mat-vec, a dot and a division per layer per chunk); with the stored u and v
  fixed in eval, the divided weight is computed once. Bit-identical.
- `pad_hourglass_channels`: the dense-motion hourglass takes (K+1)·(compress+1) = 110 channels at
  full size, and its decoder ends at 32 + 110 = 142. Tensor cores want channel counts in
  multiples of 8; off them cuDNN falls back to slow "indexed" kernels (16 % of the fp16 step on
  an H200, issue P6). Zero input channels with zero weights, and zero output channels (zero
  weight, zero bias, then ReLU: still zero) that the next convolutions ignore, add exactly
  nothing.

`prepare_for_inference` applies all three; the engine runs the result.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.warp.liveportrait.spade import SPADEDecoder, SpectralNormConv2d
from stages.warp.liveportrait.warping import DenseMotionNetwork, WarpingNetwork

TENSOR_CORE_CHANNELS = 8
"""fp16 tensor-core convolutions want channel counts divisible by 8 (16 bytes)."""

_CONV_BEFORE_NORM = (("conv", "norm"), ("compress", "norm"))
"""(convolution, BatchNorm) attribute pairs our blocks apply in that order."""


def prepare_for_inference(warping: WarpingNetwork, spade: SPADEDecoder) -> None:
    """Rewrite W and G in place for inference (eval mode, folded, frozen, padded)."""
    prepare_warping(warping)
    prepare_spade(spade)


def prepare_warping(warping: WarpingNetwork) -> WarpingNetwork:
    """W in eval mode with its BatchNorms folded and its hourglass padded (in place; returned)."""
    warping.eval()
    fold_batchnorm(warping)
    pad_hourglass_channels(warping.dense_motion_network)
    return warping


def prepare_spade(spade: SPADEDecoder) -> SPADEDecoder:
    """G in eval mode with its spectral norms frozen (in place; returned)."""
    spade.eval()
    freeze_spectral_norm(spade)
    return spade


def _folded(conv: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold `norm` (eval statistics) into `conv`'s weight and bias, in place."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.copy_(conv.weight * scale.reshape(shape))
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


@torch.no_grad()
def fold_batchnorm(root: nn.Module) -> int:
    """Fold every BatchNorm that follows its block's convolution into it; returns how many."""
    folded = 0
    for module in list(root.modules()):
        for conv_name, norm_name in _CONV_BEFORE_NORM:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if isinstance(conv, nn.modules.conv._ConvNd) and isinstance(norm, nn.modules.batchnorm._BatchNorm):
                _folded(conv, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


@torch.no_grad()
def freeze_spectral_norm(root: nn.Module) -> int:
    """Replace every SpectralNormConv2d by a plain Conv2d holding its normalised weight."""
    frozen = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpectralNormConv2d):
                weight = child.weight()
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], padding=child.padding,
                                 bias=child.bias is not None, device=weight.device, dtype=weight.dtype)
                conv.weight.copy_(weight)
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
                setattr(parent, name, conv)
                frozen += 1
    return frozen


def _with_channels(conv: nn.Module, in_channels: int, out_channels: int) -> nn.Module:
    """A copy of `conv` widened to (out_channels, in_channels): new weights and biases are zero."""
    weight, bias = conv.weight, conv.bias
    wider = type(conv)(in_channels, out_channels, conv.kernel_size, padding=conv.padding, bias=bias is not None,
                       device=weight.device, dtype=weight.dtype)
    wider.weight.zero_()
    wider.weight[: weight.shape[0], : weight.shape[1]].copy_(weight)
    if bias is not None:
        wider.bias.zero_()
        wider.bias[: bias.shape[0]].copy_(bias)
    return wider


@torch.no_grad()
def pad_hourglass_channels(dense: DenseMotionNetwork, multiple: int = TENSOR_CORE_CHANNELS) -> int:
    """Widen the hourglass input and output to multiples of `multiple`; returns the input padding.

    Needs BatchNorm folded first (a BatchNorm of the widened output would not stay zero).
    The padding channels go last everywhere: after the input's channels (so the decoder's final
    skip, which is that input, ends with them), after the output's channels, and so after the
    occlusion head's (channel, depth) rows, whose index is channel·depth + d.
    """
    decoder = dense.hourglass.decoder
    if not isinstance(decoder.norm, nn.Identity):
        raise ValueError("fold BatchNorm before padding the hourglass")
    first = dense.hourglass.encoder.down_blocks[0].conv
    n_in, n_out = first.in_channels, decoder.conv.out_channels
    pad_in, pad_out = -n_in % multiple, -n_out % multiple
    dense.input_padding = pad_in
    first_wide = _with_channels(first, n_in + pad_in, first.out_channels)
    dense.hourglass.encoder.down_blocks[0].conv = first_wide
    decoder.conv = _with_channels(decoder.conv, decoder.conv.in_channels + pad_in, n_out + pad_out)
    decoder.out_filters = dense.hourglass.out_filters = n_out + pad_out
    dense.mask = _with_channels(dense.mask, n_out + pad_out, dense.mask.out_channels)
    if dense.occlusion is not None:
        depth = dense.occlusion.in_channels // n_out
        dense.occlusion = _with_channels(dense.occlusion, (n_out + pad_out) * depth, 1)
    return pad_in

