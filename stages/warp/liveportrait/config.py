"""Network configs of the LivePortrait modules, keyed exactly like the official `models.yaml`.

Each dataclass mirrors one `model_params` entry (same field names, same defaults as the
official constructors), so a `models.yaml` section or a `cases.json` config converts 1:1 with
`from_mapping`. Pure Python: importing this module never needs torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stages.errors import StageInputError

NUM_BINS = 66
"""Head-pose bins of M. Bin i stands for 3·i − 97.5 degrees: 66 bins of 3° span 198°,
centred on 0 (3·65/2 = 97.5), so bin 0 is −97.5° and bin 65 is +97.5°."""

BIN_WIDTH_DEG = 3.0
BIN_OFFSET_DEG = 97.5

CONVNEXTV2_TINY_DEPTHS = (3, 3, 9, 3)
CONVNEXTV2_TINY_DIMS = (96, 192, 384, 768)
"""`convnextv2_tiny` hard-codes these; models.yaml only names the backbone."""

_BACKBONES = {"convnextv2_tiny": (CONVNEXTV2_TINY_DEPTHS, CONVNEXTV2_TINY_DIMS)}

CHECKPOINT_PATHS = {
    "appearance": "pretrained_weights/liveportrait/base_models/appearance_feature_extractor.pth",
    "motion": "pretrained_weights/liveportrait/base_models/motion_extractor.pth",
    "warping": "pretrained_weights/liveportrait/base_models/warping_module.pth",
    "spade": "pretrained_weights/liveportrait/base_models/spade_generator.pth",
    "retargeting": "pretrained_weights/liveportrait/retargeting_models/stitching_retargeting_module.pth",
}
"""Network role → path relative to the official repo root (src/config/inference_config.py)."""

RETARGETING_SUBDICTS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
"""MLP role → its sub-state-dict in the stitching checkpoint file."""


@dataclass(frozen=True)
class AppearanceConfig:
    """F: `appearance_feature_extractor_params`."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6

    def down_channels(self) -> list[tuple[int, int]]:
        """(in, out) channels of each down block: block_expansion doubles, clamped at max_features."""
        return [(min(self.max_features, self.block_expansion * 2 ** i),
                 min(self.max_features, self.block_expansion * 2 ** (i + 1)))
                for i in range(self.num_down_blocks)]


@dataclass(frozen=True)
class MotionConfig:
    """M: `motion_extractor_params` (num_kp, backbone); depths/dims override the backbone's."""

    num_kp: int = 21
    backbone: str = "convnextv2_tiny"
    num_bins: int = NUM_BINS
    depths: tuple[int, ...] | None = None
    dims: tuple[int, ...] | None = None

    def stage_layout(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(depths, dims) of the four ConvNeXt-V2 stages."""
        if self.depths is not None and self.dims is not None:
            depths, dims = self.depths, self.dims
        elif self.backbone in _BACKBONES:
            depths, dims = _BACKBONES[self.backbone]
        else:
            raise StageInputError("motion_extractor_params.backbone",
                                  f"unknown backbone {self.backbone!r}", known=sorted(_BACKBONES))
        if len(depths) != 4 or len(dims) != 4:
            raise StageInputError("motion_extractor_params.depths",
                                  "ConvNeXt-V2 has exactly four stages", depths=depths, dims=dims)
        return tuple(depths), tuple(dims)


@dataclass(frozen=True)
class DenseMotionConfig:
    """W's dense motion network: `warping_module_params.dense_motion_params`."""

    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4


@dataclass(frozen=True)
class WarpingConfig:
    """W: `warping_module_params`."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dense_motion_params: DenseMotionConfig = field(default_factory=DenseMotionConfig)

    @property
    def out_channels(self) -> int:
        """Channels of W.out (= G's input): block_expansion · 2^num_down_blocks."""
        return self.block_expansion * 2 ** self.num_down_blocks


@dataclass(frozen=True)
class SpadeConfig:
    """G: `spade_generator_params` (out_channels defaults to 64 as in the official class)."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64

    @property
    def input_channels(self) -> int:
        """Channels of G's input: block_expansion · 2^num_down_blocks, clamped at max_features."""
        return min(self.max_features, self.block_expansion * 2 ** self.num_down_blocks)


@dataclass(frozen=True)
class MlpConfig:
    """One stitching/retargeting MLP: Linear-ReLU per hidden size, then a Linear."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


@dataclass(frozen=True)
class RetargetingConfig:
    """`stitching_retargeting_module_params`: the three MLPs."""

    stitching: MlpConfig = MlpConfig(126, (128, 128, 64), 65)
    lip: MlpConfig = MlpConfig(65, (128, 128, 64), 63)
    eye: MlpConfig = MlpConfig(66, (256, 256, 128, 128, 64), 63)


@dataclass(frozen=True)
class LivePortraitConfig:
    """All networks; field names are the `model_params` keys of models.yaml."""

    appearance_feature_extractor_params: AppearanceConfig = AppearanceConfig()
    motion_extractor_params: MotionConfig = MotionConfig()
    warping_module_params: WarpingConfig = WarpingConfig()
    spade_generator_params: SpadeConfig = SpadeConfig()
    stitching_retargeting_module_params: RetargetingConfig = RetargetingConfig()


FULL = LivePortraitConfig()
"""The released models (models.yaml)."""

T = TypeVar("T")


def from_mapping(cls: type[T], mapping: Mapping[str, Any], field_path: str = "") -> T:
    """Build config dataclass `cls` from a YAML/JSON mapping; unknown keys are an error.

    Lists become tuples and nested mappings become nested configs, so equal configs compare equal
    whatever file they came from.
    """
    if not isinstance(mapping, Mapping):
        raise StageInputError(field_path or cls.__name__, "expected a mapping", got=type(mapping).__name__)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise StageInputError(field_path or cls.__name__, f"unknown keys {unknown}", known=sorted(names))
    kwargs = {}
    for name, value in mapping.items():
        where = f"{field_path}.{name}" if field_path else name
        kwargs[name] = _convert(hints[name], value, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise StageInputError(field_path or cls.__name__, str(exc)) from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Coerce one YAML/JSON value to the annotated field type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        hint = args[0]
        args = list(typing.get_args(hint))
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise StageInputError(where, "expected a list of integers", got=value)
        return tuple(int(v) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise StageInputError(where, "expected true or false", got=value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StageInputError(where, "expected a non-negative integer", got=value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise StageInputError(where, "expected a string", got=value)
        return value
    return value


def config_from_model_params(model_params: Mapping[str, Any]) -> LivePortraitConfig:
    """The config described by models.yaml's `model_params` mapping (missing sections stay FULL)."""
    return from_mapping(LivePortraitConfig, model_params, "model_params")


def small_config_from_cases(cases: Mapping[str, Any]) -> LivePortraitConfig:
    """The small F/M/W/G configs of a fidelity `cases.json`, with the full-size MLPs.

    The small M keeps the ConvNeXt-V2 wrapper but takes its stage depths and dims from the file.
    """
    small = cases.get("small_configs")
    if not isinstance(small, Mapping):
        raise StageInputError("cases.small_configs", "missing from cases.json")
    full = cases.get("full_configs", {}).get("stitching_retargeting_module_params")
    retargeting = (from_mapping(RetargetingConfig, full, "full_configs.stitching_retargeting_module_params")
                   if full is not None else RetargetingConfig())
    return LivePortraitConfig(
        appearance_feature_extractor_params=from_mapping(AppearanceConfig, small["F"], "small_configs.F"),
        motion_extractor_params=from_mapping(MotionConfig, small["M"], "small_configs.M"),
        warping_module_params=from_mapping(WarpingConfig, small["W"], "small_configs.W"),
        spade_generator_params=from_mapping(SpadeConfig, small["G"], "small_configs.G"),
        stitching_retargeting_module_params=retargeting,
    )
