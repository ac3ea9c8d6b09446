"""M, the motion extractor: a ConvNeXt-V2 backbone with seven linear heads.

Image (B,3,256,256) → dict of raw outputs: pitch/yaw/roll (B,66) bin logits, t (B,3),
exp (B,63), scale (B,1), kp (B,63). `keypoints.refine_kp_info` turns them into degrees and
B×21×3 keypoints. Names follow the official state_dict (`detector.…`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from stages.warp.liveportrait.config import MotionConfig

LN_EPS = 1e-6
"""ConvNeXt-V2 uses eps 1e-6 in every LayerNorm (stem, downsampling, blocks, head)."""

GRN_EPS = 1e-6
MLP_RATIO = 4
"""Each block's inverted bottleneck widens the channels 4×."""

DWCONV_KERNEL = 7
STEM_STRIDE = 4
"""The stem is a 4×4 conv with stride 4 (patchify); each later downsample is 2×2 stride 2."""


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, with the biased variance computed by hand."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every pixel's channel vector."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + LN_EPS)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation on NHWC: x + γ·(x·Nx) + β, Nx = ‖x‖₂(H,W) / mean_C(‖x‖₂)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply GRN to a (B,H,W,C) tensor."""
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + GRN_EPS)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """dwconv7×7 → NHWC → LN → Linear(4×) → GELU → GRN → Linear → NCHW → + input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=DWCONV_KERNEL, padding=DWCONV_KERNEL // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.pwconv1 = nn.Linear(dim, MLP_RATIO * dim)
        self.grn = GRN(MLP_RATIO * dim)
        self.pwconv2 = nn.Linear(MLP_RATIO * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (no layer scale, no drop path: inference only)."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(nnf.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """The backbone plus the seven heads (the official `detector`)."""

    def __init__(self, config: MotionConfig = MotionConfig(), in_channels: int = 3) -> None:
        super().__init__()
        depths, dims = config.stage_layout()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=STEM_STRIDE, stride=STEM_STRIDE), LayerNorm2d(dims[0]))])
        for cin, cout in zip(dims[:-1], dims[1:]):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, cout, kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
                                    for depth, dim in zip(depths, dims))
        width = dims[-1]
        self.norm = nn.LayerNorm(width, eps=LN_EPS)
        self.fc_kp = nn.Linear(width, 3 * config.num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, config.num_bins)
        self.fc_yaw = nn.Linear(width, config.num_bins)
        self.fc_roll = nn.Linear(width, config.num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * config.num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image → raw head outputs."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        feat = self.norm(x.mean([-2, -1]))  # global average pool, then LN
        return {"pitch": self.fc_pitch(feat), "yaw": self.fc_yaw(feat), "roll": self.fc_roll(feat),
                "t": self.fc_t(feat), "exp": self.fc_exp(feat), "scale": self.fc_scale(feat),
                "kp": self.fc_kp(feat)}


class MotionExtractor(nn.Module):
    """M: image (B,3,256,256) in [0,1] → dict pitch, yaw, roll, t, exp, scale, kp (raw)."""

    def __init__(self, config: MotionConfig = MotionConfig()) -> None:
        super().__init__()
        self.config = config
        self.detector = ConvNeXtV2(config)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw motion of `image` (angles are bin logits; kp and exp flat B×63)."""
        return self.detector(image)
