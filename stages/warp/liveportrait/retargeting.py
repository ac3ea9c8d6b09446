"""The stitching and retargeting MLPs (S, lip, eye): Linear-ReLU per hidden size, then Linear.

Stitching: [x_s, x_d] (126) → 63 keypoint deltas + a shared (tx, ty) (65).
Lip: [x_s, c_s_lip, c_d_lip] (65) → 63.  Eye: [x_s, c_s_left, c_s_right, c_d_eye] (66) → 63.
Parameter names are `mlp.<index>.weight/bias` as in the official state_dict (ReLUs take the odd
indices).
"""

from __future__ import annotations

import torch
from torch import nn

from stages.warp.liveportrait.config import MlpConfig, RetargetingConfig


class RetargetingMlp(nn.Module):
    """One stitching/retargeting MLP: x (B, input_size) → (B, output_size)."""

    def __init__(self, config: MlpConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.input_size, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for cin, cout in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(cin, cout), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], config.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.mlp(x)


def build_retargeting(config: RetargetingConfig = RetargetingConfig()) -> dict[str, RetargetingMlp]:
    """The three MLPs keyed 'stitching', 'lip', 'eye' (the official wrapper's dict keys)."""
    return {"stitching": RetargetingMlp(config.stitching), "lip": RetargetingMlp(config.lip),
            "eye": RetargetingMlp(config.eye)}
