"""F, the appearance feature extractor: a 256² RGB crop → the 3-D feature volume f_s.

conv-BN-ReLU → down blocks (conv-BN-ReLU-avgpool) → 1×1 conv → fold channels into
(reshape_channel, reshape_depth) → pre-activation 3-D residual blocks. At full size:
1×3×256×256 → 1×256×64×64 → 1×512×64×64 → 1×32×16×64×64 (channel index = c·16 + d).
Module and parameter names follow the official state_dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from stages.warp.liveportrait.config import AppearanceConfig

LEAKY_SLOPE = 0.01
"""nn.LeakyReLU's default slope, which the official SameBlock2d(lrelu=True) uses."""


class ConvNormAct2d(nn.Module):
    """conv3×3 (same size) → BatchNorm → ReLU, or LeakyReLU(0.01) when `leaky` (SameBlock2d)."""

    def __init__(self, in_channels: int, out_channels: int, leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, norm and activation."""
        x = self.norm(self.conv(x))
        return nnf.leaky_relu(x, LEAKY_SLOPE) if self.leaky else nnf.relu(x)


class DownBlock2d(nn.Module):
    """conv3×3 → BatchNorm → ReLU → 2×2 average pool (halves H and W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return nnf.avg_pool2d(nnf.relu(self.norm(self.conv(x))), kernel_size=2)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (the input is not modified)."""
        out = self.conv1(nnf.relu(self.norm1(x)))
        return self.conv2(nnf.relu(self.norm2(out))) + x


class AppearanceFeatureExtractor(nn.Module):
    """F: source image (B,3,H,W) in [0,1] → feature volume (B, reshape_channel, reshape_depth, H/4, W/4)."""

    def __init__(self, config: AppearanceConfig = AppearanceConfig()) -> None:
        super().__init__()
        self.config = config
        self.first = ConvNormAct2d(config.image_channel, config.block_expansion)
        down = config.down_channels()
        self.down_blocks = nn.ModuleList(DownBlock2d(cin, cout) for cin, cout in down)
        last = down[-1][1] if down else config.block_expansion
        self.second = nn.Conv2d(last, config.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(config.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(config.reshape_channel))

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        """f_s = F(I_s)."""
        x = self.first(source_image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        # The 2-D channels fold into (C, D): channel index = c·reshape_depth + d.
        x = x.view(b, self.config.reshape_channel, self.config.reshape_depth, h, w)
        return self.resblocks_3d(x)
