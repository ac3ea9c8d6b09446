"""LivePortrait networks (F, M, W, G, stitching/retargeting MLPs) in our own PyTorch.

Importing this package does not import torch: the configs are plain Python, and the
torch-backed modules (appearance, motion_extractor, warping, spade, retargeting, keypoints,
checkpoints, fidelity) are imported explicitly by whoever needs them.
"""

from __future__ import annotations

from stages.warp.liveportrait.config import (CHECKPOINT_PATHS, FULL, RETARGETING_SUBDICTS, AppearanceConfig,
                                             DenseMotionConfig, LivePortraitConfig, MlpConfig, MotionConfig,
                                             RetargetingConfig, SpadeConfig, WarpingConfig,
                                             config_from_model_params, small_config_from_cases)

__all__ = ["CHECKPOINT_PATHS", "FULL", "RETARGETING_SUBDICTS", "AppearanceConfig", "DenseMotionConfig",
           "LivePortraitConfig", "MlpConfig", "MotionConfig", "RetargetingConfig", "SpadeConfig",
           "WarpingConfig", "config_from_model_params", "small_config_from_cases"]
