"""W, the warping network, and its dense motion network.

Given f_s and source/driving keypoints, the dense motion network predicts a per-voxel mix of
K+1 candidate motions (identity, plus one rigid shift per keypoint) and an occlusion map; W
warps f_s with the mixed deformation, flattens depth into channels and projects it for G.

Coordinates follow `identity_grid`: the last axis is (x, y, z), each in [−1, 1] with
align_corners=True spacing, while every grid_sample uses align_corners=False. That mismatch is
the official behaviour (the "identity" warp shrinks the volume slightly and the corner voxel
keeps 1/8 of its value); it is reproduced on purpose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from stages.warp.liveportrait.appearance import ConvNormAct2d
from stages.warp.liveportrait.config import DenseMotionConfig, WarpingConfig
from stages.warp.liveportrait.sampling import sample_volume

KP_VARIANCE = 0.01
"""Variance of the keypoint Gaussians in grid units (σ = 0.1, a twentieth of the [−1,1] span)."""

MASK_KERNEL = 7
OCCLUSION_KERNEL = 7


def identity_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(D,H,W,3) grid whose value at (d,h,w) is (x_w, y_h, z_d), x_i = 2·i/(n−1) − 1."""
    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=like.dtype, device=like.device)
        return 2 * (i / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B,K,D,H,W) unnormalised Gaussians exp(−½‖grid − kp_k‖² / 0.01) around each keypoint."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / KP_VARIANCE)


class DownBlock3d(nn.Module):
    """conv3×3×3 → BatchNorm → ReLU → average pool (1,2,2): halves H and W, keeps depth."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return nnf.avg_pool3d(nnf.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest upsample (1,2,2) → conv3×3×3 → BatchNorm → ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = nnf.interpolate(x, scale_factor=(1, 2, 2))
        return nnf.relu(self.norm(self.conv(x)))


class HourglassEncoder(nn.Module):
    """Down blocks; returns the input and every block's output (the skips)."""

    def __init__(self, channels: list[tuple[int, int]]) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(DownBlock3d(cin, cout) for cin, cout in channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x, d0(x), d1(d0(x)), …]."""
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Up blocks, each followed by concatenating [up, skip]; then conv-BN-ReLU at `out_filters`."""

    def __init__(self, channels: list[tuple[int, int]], out_filters: int) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList(UpBlock3d(cin, cout) for cin, cout in channels)
        self.out_filters = out_filters
        self.conv = nn.Conv3d(out_filters, out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decode the encoder outputs (deepest last); the list is not modified."""
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return nnf.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net over (D, H, W) that halves H, W per level; output = block_expansion + in_features channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()

        def width(level: int) -> int:  # channels at a level: doubling, clamped at max_features
            return min(max_features, block_expansion * 2 ** level)

        down = [(in_features if i == 0 else width(i), width(i + 1)) for i in range(num_blocks)]
        # Every up block but the deepest sees [up, skip] from the level below: twice its width.
        up = [((1 if i == num_blocks - 1 else 2) * width(i + 1), width(i)) for i in reversed(range(num_blocks))]
        self.out_filters = block_expansion + in_features
        self.encoder = HourglassEncoder(down)
        self.decoder = HourglassDecoder(up, self.out_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode then decode."""
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    """Predicts the deformation (B,D,H,W,3) and occlusion map (B,1,H,W) from f_s and keypoints."""

    def __init__(self, config: DenseMotionConfig, num_kp: int, feature_channel: int,
                 estimate_occlusion_map: bool = True) -> None:
        super().__init__()
        self.num_kp = num_kp
        # Per candidate motion: 1 heatmap channel + `compress` deformed-feature channels.
        in_features = (num_kp + 1) * (config.compress + 1)
        self.hourglass = Hourglass(config.block_expansion, in_features, config.num_blocks, config.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=MASK_KERNEL,
                              padding=MASK_KERNEL // 2)
        self.compress = nn.Conv3d(feature_channel, config.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(config.compress)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters * config.reshape_depth, 1,
                                    kernel_size=OCCLUSION_KERNEL, padding=OCCLUSION_KERNEL // 2)
                          if estimate_occlusion_map else None)
        self.input_padding = 0
        """Zero channels appended to the hourglass input (inference.pad_hourglass_channels)."""

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        """dict(mask (B,K+1,D,H,W), deformation (B,D,H,W,3)[, occlusion_map (B,1,H,W)])."""
        feature = nnf.relu(self.norm(self.compress(feature)))
        b, c, d, h, w = feature.shape
        k1 = self.num_kp + 1
        grid = identity_grid(d, h, w, feature)
        kp_d = kp_driving.reshape(b, self.num_kp, 1, 1, 1, 3)
        kp_s = kp_source.reshape(b, self.num_kp, 1, 1, 1, 3)
        # Candidate k samples the source where driving keypoint k's neighbourhood came from.
        shifted = (grid - kp_d) + kp_s
        sparse_motion = torch.cat([grid.expand(b, 1, d, h, w, 3), shifted], dim=1)  # (B,K+1,D,H,W,3)

        repeated = feature.unsqueeze(1).expand(b, k1, c, d, h, w).reshape(b * k1, c, d, h, w)
        deformed = sample_volume(repeated, sparse_motion.reshape(b * k1, d, h, w, 3))
        deformed = deformed.view(b, k1, c, d, h, w)

        heat = keypoint_gaussians(kp_driving.reshape(b, -1, 3), grid) - keypoint_gaussians(
            kp_source.reshape(b, -1, 3), grid)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)  # identity has no heatmap

        stacked = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)
        if self.input_padding:
            stacked = nnf.pad(stacked, (0, 0, 0, 0, 0, 0, 0, self.input_padding))
        prediction = self.hourglass(stacked)
        mask = torch.softmax(self.mask(prediction), dim=1)
        deformation = (sparse_motion.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1)
        out = {"mask": mask, "deformation": deformation.permute(0, 2, 3, 4, 1)}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


class WarpingNetwork(nn.Module):
    """W: (feature_3d, kp_driving, kp_source) → dict occlusion_map, deformation, out.

    Argument order is the official one: driving before source (pass keywords to be safe).
    """

    def __init__(self, config: WarpingConfig = WarpingConfig()) -> None:
        super().__init__()
        self.config = config
        self.dense_motion_network = DenseMotionNetwork(config.dense_motion_params, config.num_kp,
                                                       config.reshape_channel, config.estimate_occlusion_map)
        # f_s flattened to (C·D) channels: reshape_channel · reshape_depth = max_features.
        self.third = ConvNormAct2d(config.max_features, config.out_channels, leaky=True)
        self.fourth = nn.Conv2d(config.out_channels, config.out_channels, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Warp f_s (B,C,D,H,W) from the source to the driving keypoints (B,K,3)."""
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        deformation = motion["deformation"]
        out = sample_volume(feature_3d, deformation)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        occlusion_map = motion.get("occlusion_map")
        if occlusion_map is not None:
            out = out * occlusion_map
        return {"occlusion_map": occlusion_map, "deformation": deformation, "out": out}
