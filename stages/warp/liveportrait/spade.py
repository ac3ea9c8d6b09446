"""G, the SPADE decoder: W's warped feature (B,C,64,64) → image (B,3,512,512) in [0,1].

fc → 6 SPADE residual blocks at 2C → ×2 → up_0 (2C→C) → ×2 → up_1 (C→out_channels) →
leaky_relu(0.2) → conv_img (+ PixelShuffle(2) when upscale > 1) → sigmoid. Every SPADE layer is
modulated by the decoder's own input (the "segmap"), resized to the layer's resolution.
The residual blocks' convs are spectrally normalised with the *stored* u and v (eval rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from stages.warp.liveportrait.config import SpadeConfig

SPADE_HIDDEN = 128
"""Width of SPADE's shared conv: hard-coded in the official code, independent of the config."""

IN_EPS = 1e-5
LEAKY_SLOPE = 0.2
NUM_MIDDLE_BLOCKS = 6
PIXEL_SHUFFLE = 2
"""conv_img makes 3·2² channels and PixelShuffle(2) trades them for 2× resolution (hard-coded 2)."""


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is weight_orig / σ, σ = u·(W_mat·v) from the stored u and v.

    Holds exactly torch's spectral-norm state (`weight_orig` parameter, `weight_u`/`weight_v`
    buffers), so official state_dicts load strictly. There is no power iteration: buffers never
    change, which is what the official model does in eval (the only mode we run).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.padding = padding
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
        self.weight_orig = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Unit vectors until loading a checkpoint replaces them with its stored power-iteration u and v.
        n_in = in_channels * kernel_size * kernel_size
        self.register_buffer("weight_u", torch.full((out_channels,), out_channels ** -0.5))
        self.register_buffer("weight_v", torch.full((n_in,), n_in ** -0.5))

    def weight(self) -> torch.Tensor:
        """The effective (normalised) weight."""
        w_mat = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(w_mat, self.weight_v))
        return self.weight_orig / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the normalised weight."""
        return nnf.conv2d(x, self.weight(), self.bias, padding=self.padding)


class Spade(nn.Module):
    """out = InstanceNorm(x)·(1 + γ(seg)) + β(seg), with seg resized (nearest) to x's size."""

    def __init__(self, norm_channels: int, label_channels: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, SPADE_HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        """Modulate normalised x by the segmap."""
        normalized = nnf.instance_norm(x, eps=IN_EPS)
        actv = self.mlp_shared(nnf.interpolate(segmap, size=x.shape[2:], mode="nearest"))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SpadeResBlock(nn.Module):
    """shortcut(x) + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x)))))); learned shortcut iff fin ≠ fout."""

    def __init__(self, fin: int, fout: int, label_channels: int) -> None:
        super().__init__()
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        self.norm_0 = Spade(fin, label_channels)
        self.norm_1 = Spade(fmiddle, label_channels)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = Spade(fin, label_channels)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(nnf.leaky_relu(self.norm_0(x, seg), LEAKY_SLOPE))
        dx = self.conv_1(nnf.leaky_relu(self.norm_1(dx, seg), LEAKY_SLOPE))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """G: feature (B, C_in, H, W) → image (B, 3, 8H, 8W) with upscale > 1 (4H, 4W otherwise)."""

    def __init__(self, config: SpadeConfig = SpadeConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.input_channels
        self.fc = nn.Conv2d(c, 2 * c, kernel_size=3, padding=1)
        for i in range(NUM_MIDDLE_BLOCKS):
            self.add_module(f"G_middle_{i}", SpadeResBlock(2 * c, 2 * c, c))
        self.up_0 = SpadeResBlock(2 * c, c, c)
        self.up_1 = SpadeResBlock(c, config.out_channels, c)
        if config.upscale is not None and config.upscale > 1:
            self.conv_img = nn.Sequential(
                nn.Conv2d(config.out_channels, 3 * PIXEL_SHUFFLE ** 2, kernel_size=3, padding=1),
                nn.PixelShuffle(PIXEL_SHUFFLE))
        else:
            self.conv_img = nn.Conv2d(config.out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Decode W.out into an RGB image in [0, 1]."""
        seg = feature
        x = self.fc(feature)
        for i in range(NUM_MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(nnf.interpolate(x, scale_factor=2), seg)
        x = self.up_1(nnf.interpolate(x, scale_factor=2), seg)
        return torch.sigmoid(self.conv_img(nnf.leaky_relu(x, LEAKY_SLOPE)))
