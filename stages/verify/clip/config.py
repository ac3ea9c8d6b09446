"""Network configs of open_clip's ViT CLIP models, and the image normalisation they were trained with.

Field values mirror open_clip's `model_configs/<name>.json` (vision_cfg / text_cfg / embed_dim /
quick_gelu); `from_open_clip` reads such a `model_cfg` mapping (as found in the
`open_clip_config.json` beside hub weights) and `to_open_clip` writes one back.
Pure Python: importing this module never needs torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB mean/std of OpenAI's CLIP training images, applied to pixels in [0, 1]:
open_clip's `constants.py` (OPENAI_DATASET_MEAN / OPENAI_DATASET_STD), which it uses for the
ViT-B-32 and ViT-L-14 weights (OpenAI's and LAION's alike)."""


class UnsupportedClipConfig(ValueError):
    """An open_clip model config asks for something these networks do not implement."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ClipConfig:
    """One CLIP model: a ViT image tower and a causal text transformer meeting in `embed_dim`.

    `quick_gelu` selects x·sigmoid(1.702·x) (what OpenAI trained with, open_clip's `-quickgelu`
    names) instead of exact GELU; it changes no weight shape, so it must come from the config.
    """

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_heads: int
    text_layers: int
    vision_head_width: int = 64  # open_clip derives the head count: width // head_width
    vision_mlp_ratio: float = 4.0
    text_mlp_ratio: float = 4.0
    context_length: int = 77
    vocab_size: int = 49408
    quick_gelu: bool = False

    def __post_init__(self) -> None:
        if self.vision_width % self.vision_head_width:
            raise ValueError(f"vision_width {self.vision_width} is not a multiple of "
                             f"vision_head_width {self.vision_head_width}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} is not a multiple of text_heads {self.text_heads}")
        if self.image_size < self.patch_size:
            raise ValueError(f"image_size {self.image_size} is smaller than patch_size {self.patch_size}")

    @property
    def vision_heads(self) -> int:
        """Attention heads of the image tower."""
        return self.vision_width // self.vision_head_width

    @property
    def grid_size(self) -> int:
        """Patches per image side (open_clip floors, as the strided patch conv does)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_open_clip(cls, model_cfg: Mapping[str, Any]) -> ClipConfig:
        """Read an open_clip `model_cfg` mapping; options these networks lack raise UnsupportedClipConfig."""
        vision = _section(model_cfg, "vision_cfg")
        text = _section(model_cfg, "text_cfg")
        _refuse_unknown("model_cfg", model_cfg, {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"},
                        _TOP_NEUTRAL)
        _refuse_unknown("vision_cfg", vision, {"image_size", "patch_size", "width", "layers", "head_width",
                                               "mlp_ratio"}, _VISION_NEUTRAL)
        _refuse_unknown("text_cfg", text, {"context_length", "vocab_size", "width", "heads", "layers",
                                           "mlp_ratio"}, _TEXT_NEUTRAL)
        if not isinstance(vision.get("layers", 12), int):
            raise UnsupportedClipConfig("vision_cfg.layers", "a list of stage depths is a ResNet tower, not a ViT")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        try:
            return cls(embed_dim=int(model_cfg["embed_dim"]),
                       image_size=_square("vision_cfg.image_size", vision.get("image_size", 224)),
                       patch_size=_square("vision_cfg.patch_size", vision.get("patch_size", 16)),
                       vision_width=int(vision.get("width", 768)),
                       vision_layers=int(vision.get("layers", 12)),
                       vision_head_width=int(vision.get("head_width", defaults["vision_head_width"])),
                       vision_mlp_ratio=float(vision.get("mlp_ratio", defaults["vision_mlp_ratio"])),
                       text_width=int(text.get("width", 512)),
                       text_heads=int(text.get("heads", 8)),
                       text_layers=int(text.get("layers", 12)),
                       text_mlp_ratio=float(text.get("mlp_ratio", defaults["text_mlp_ratio"])),
                       context_length=int(text.get("context_length", defaults["context_length"])),
                       vocab_size=int(text.get("vocab_size", defaults["vocab_size"])),
                       quick_gelu=bool(model_cfg.get("quick_gelu", False)))
        except KeyError as exc:
            raise UnsupportedClipConfig(f"model_cfg.{exc.args[0]}", "is required") from None
        except (TypeError, ValueError) as exc:
            raise UnsupportedClipConfig("model_cfg", str(exc)) from None

    def to_open_clip(self) -> dict[str, Any]:
        """This config as an open_clip `model_cfg` mapping (what `from_open_clip` reads back)."""
        return {"embed_dim": self.embed_dim, "quick_gelu": self.quick_gelu,
                "vision_cfg": {"image_size": self.image_size, "layers": self.vision_layers,
                               "width": self.vision_width, "patch_size": self.patch_size,
                               "head_width": self.vision_head_width, "mlp_ratio": self.vision_mlp_ratio},
                "text_cfg": {"context_length": self.context_length, "vocab_size": self.vocab_size,
                             "width": self.text_width, "heads": self.text_heads, "layers": self.text_layers,
                             "mlp_ratio": self.text_mlp_ratio}}


# open_clip options that may appear in a model_cfg, with the values that leave the plain
# ViT CLIP unchanged. Anything else changes keys or math, so loading must refuse it.
_TOP_NEUTRAL: dict[str, tuple] = {"init_logit_scale": (), "init_logit_bias": (None,),
                                  "custom_text": (False,)}
_VISION_NEUTRAL: dict[str, tuple] = {"ls_init_value": (None,), "patch_dropout": (), "attentional_pool": (False,),
                                     "no_ln_pre": (False,), "pos_embed_type": ("learnable",),
                                     "final_ln_after_pool": (False,), "pool_type": ("tok",),
                                     "global_average_pool": (False,), "output_tokens": (False,),
                                     "timm_model_name": (None,)}
_TEXT_NEUTRAL: dict[str, tuple] = {"ls_init_value": (None,), "embed_cls": (False,), "pad_id": (),
                                   "no_causal_mask": (False,), "final_ln_after_pool": (False,),
                                   "pool_type": ("argmax",), "proj_bias": (False,), "proj_type": ("linear",),
                                   "output_tokens": (False,), "hf_model_name": (None,),
                                   "hf_tokenizer_name": (None,), "tokenizer_kwargs": (None,)}
"""Key → accepted values; an empty tuple accepts any value (init- or training-only options)."""


def _section(model_cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = model_cfg.get(name, {})
    if not isinstance(section, Mapping):
        raise UnsupportedClipConfig(name, f"is a {type(section).__name__}, not a mapping")
    return section


def _refuse_unknown(where: str, section: Mapping[str, Any], known: set[str],
                    neutral: Mapping[str, tuple]) -> None:
    for key, value in section.items():
        if key in known:
            continue
        accepted = neutral.get(key)
        if accepted is None:
            raise UnsupportedClipConfig(f"{where}.{key}", "is not supported by these networks")
        if accepted and value not in accepted:
            raise UnsupportedClipConfig(f"{where}.{key}", f"{value!r} is not supported (only {accepted[0]!r})")


def _square(key: str, value: Any) -> int:
    """open_clip allows (h, w) pairs; these towers are square."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise UnsupportedClipConfig(key, f"{list(value)} is not square")
        value = value[0]
    return int(value)


VIT_B_32 = ClipConfig(embed_dim=512, image_size=224, patch_size=32, vision_width=768, vision_layers=12,
                      text_width=512, text_heads=8, text_layers=12)
"""open_clip `ViT-B-32.json` (exact GELU: LAION-trained weights)."""

VIT_L_14 = ClipConfig(embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=24,
                      text_width=768, text_heads=12, text_layers=12)
"""open_clip `ViT-L-14.json` (exact GELU: LAION-trained weights)."""

CONFIGS: dict[str, ClipConfig] = {
    "ViT-B-32": VIT_B_32,
    "ViT-B-32-quickgelu": dataclasses.replace(VIT_B_32, quick_gelu=True),
    "ViT-L-14": VIT_L_14,
    "ViT-L-14-quickgelu": dataclasses.replace(VIT_L_14, quick_gelu=True),
}
"""open_clip model name → config. The `-quickgelu` variants are what OpenAI's own weights need;
an `open_clip_config.json` beside the weights, when present, decides instead of the name."""
