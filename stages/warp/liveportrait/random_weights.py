"""Random LivePortrait weights in the official layout, for tests, benchmarks and export checks.

The release cannot be downloaded on a build machine. These builders give every network
weights with realistic statistics (so every branch stays active and the numbers stay finite)
and write them as the five official files, which the real loader then reads unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stages.warp.liveportrait.checkpoints import DDP_MARKER, build_networks
from stages.warp.liveportrait.config import (CHECKPOINT_PATHS, FULL, RETARGETING_SUBDICTS, AppearanceConfig,
                                             DenseMotionConfig, LivePortraitConfig, MotionConfig, SpadeConfig,
                                             WarpingConfig)

TINY = LivePortraitConfig(
    appearance_feature_extractor_params=AppearanceConfig(block_expansion=8, num_down_blocks=5, max_features=32,
                                                         reshape_channel=8, reshape_depth=4, num_resblocks=1),
    motion_extractor_params=MotionConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    warping_module_params=WarpingConfig(block_expansion=4, max_features=32, num_down_blocks=2, reshape_channel=8,
                                        dense_motion_params=DenseMotionConfig(block_expansion=4, max_features=16,
                                                                              num_blocks=2, reshape_depth=4,
                                                                              compress=2)),
    spade_generator_params=SpadeConfig(block_expansion=4, max_features=16, num_down_blocks=2, out_channels=8))
"""Every network's structure at a few channels: its random weights (about a megabyte) run a whole
slot on a CPU in seconds, so daemon and backend tests exercise the real code end to end."""


def random_state_dict(module: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A state_dict for `module` with random values that keep every branch active.

    Weights ~ N(0, 1/fan_in) (unit-gain layers), norm scales 1 ± 0.1, biases and GRN small,
    BN running variance in [0.5, 1.5], spectral-norm u and v unit vectors.
    """
    out = {}
    for key, ref in module.state_dict().items():
        shape = tuple(ref.shape)
        if not ref.is_floating_point():
            out[key] = torch.zeros(shape, dtype=ref.dtype)  # num_batches_tracked
            continue

        def normal(std: float) -> torch.Tensor:
            return torch.randn(shape, generator=generator) * std

        if key.endswith(("weight_u", "weight_v")):
            v = normal(1.0)
            out[key] = v / v.norm()
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean"):
            out[key] = normal(0.1)
        elif len(shape) >= 2 and ".grn." not in key:
            fan_in = 1
            for n in shape[1:]:
                fan_in *= n
            out[key] = normal(fan_in ** -0.5)
        elif key.endswith("weight") and len(shape) == 1:  # BN / LN scales
            out[key] = 1 + normal(0.1)
        else:  # biases, GRN gamma and beta
            out[key] = normal(0.1)
    return out


def write_random_checkpoints(folder: str | Path, config: LivePortraitConfig = FULL, seed: int = 0,
                             ddp_prefix: bool = True) -> dict[str, Path]:
    """Write a random-weight checkpoint set in the official layout under `folder`.

    The stitching sub-dicts get the `module.` prefix (as in the official file) when `ddp_prefix`.
    Returns role → written path.
    """
    folder = Path(folder)
    generator = torch.Generator().manual_seed(seed)
    nets = build_networks(config, device="meta")
    modules = nets.modules_by_role()
    written = {}
    for role in ("appearance", "motion", "warping", "spade"):
        path = folder / CHECKPOINT_PATHS[role]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_state_dict(modules[role], generator), path)
        written[role] = path
    prefix = DDP_MARKER if ddp_prefix else ""
    bundle = {sub: {prefix + k: v for k, v in random_state_dict(modules[role], generator).items()}
              for role, sub in RETARGETING_SUBDICTS.items()}
    path = folder / CHECKPOINT_PATHS["retargeting"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, path)
    written["retargeting"] = path
    return written
