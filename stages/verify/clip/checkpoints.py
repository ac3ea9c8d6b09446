"""Loading (and, for tests and tools, writing) open_clip weights from a local model folder.

`<folder>/<name>/` holds `open_clip_model.safetensors` or `open_clip_pytorch_model.bin` (the
safetensors file wins when both exist, as in open_clip), and optionally the
`open_clip_config.json` that hub repositories ship beside them. That JSON, when present, decides
the config, because the model name cannot tell OpenAI's QuickGELU weights from LAION's GELU
ones; without it `name` must be one of `config.CONFIGS`. The tokenizer's
`bpe_simple_vocab_16e6.txt.gz` lives in `<folder>` itself, beside the model folders.

Matching is strict: every key present, none extra, every shape equal (a leading `module.` from
a DDP wrapper is removed first); otherwise `ClipCheckpointError` names the file and the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from stages.errors import StageInputError
from stages.verify.clip.config import (
    CONFIGS,
    OPENAI_MEAN,
    OPENAI_STD,
    ClipConfig,
    UnsupportedClipConfig,
)
from stages.verify.clip.model import ClipModel, causal_mask

CHECKPOINT_FIELD = "clip_weights_dir"
SAFETENSORS_FILE = "open_clip_model.safetensors"
PICKLE_FILE = "open_clip_pytorch_model.bin"
CONFIG_FILE = "open_clip_config.json"
"""File names from open_clip's constants (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, HF_CONFIG_NAME)."""
DDP_PREFIX = "module."


class ClipCheckpointError(StageInputError):
    """A CLIP weight or config file is missing or does not match the network: names the file and the key."""

    def __init__(self, file: str | Path, key: str, message: str, **details: object) -> None:
        super().__init__(CHECKPOINT_FIELD, f"{file}: {key}: {message}", file=str(file), key=key, **details)
        self.file = str(file)
        self.key = key


def find_weights(model_dir: Path) -> Path:
    """The weight file in `model_dir`: safetensors first, then the torch pickle."""
    for file in (SAFETENSORS_FILE, PICKLE_FILE):
        if (model_dir / file).is_file():
            return model_dir / file
    raise ClipCheckpointError(model_dir / SAFETENSORS_FILE, "<file>", f"not found (nor {PICKLE_FILE} beside it)")


def read_config(model_dir: Path, name: str) -> ClipConfig:
    """The model's config: from `open_clip_config.json` when present, else the preset called `name`."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        if name not in CONFIGS:
            raise ClipCheckpointError(path, "<file>", f"not found, and {name!r} is not a known model name "
                                      f"(known: {', '.join(CONFIGS)})")
        return CONFIGS[name]
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClipCheckpointError(path, "<file>", f"cannot be read: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("model_cfg"), Mapping):
        raise ClipCheckpointError(path, "model_cfg", "missing (an open_clip config has a model_cfg mapping)")
    try:
        config = ClipConfig.from_open_clip(document["model_cfg"])
    except UnsupportedClipConfig as exc:
        raise ClipCheckpointError(path, exc.key, exc.message) from None
    _check_preprocess(document.get("preprocess_cfg") or {}, config, path)
    return config


def _check_preprocess(preprocess: Mapping, config: ClipConfig, path: Path) -> None:
    """`to_clip_pixels` implements one transform; refuse weights trained for another."""
    if not isinstance(preprocess, Mapping):
        raise ClipCheckpointError(path, "preprocess_cfg", f"is a {type(preprocess).__name__}, not a mapping")
    for key, wanted in (("mean", OPENAI_MEAN), ("std", OPENAI_STD)):
        value = preprocess.get(key, wanted)
        numbers = isinstance(value, (list, tuple)) and all(isinstance(a, (int, float)) for a in value)
        if not numbers or len(value) != 3 or any(abs(a - b) > 1e-6 for a, b in zip(value, wanted)):
            raise ClipCheckpointError(path, f"preprocess_cfg.{key}", f"{value} is not OpenAI's {list(wanted)}")
    for key, wanted in (("interpolation", "bicubic"), ("resize_mode", "shortest"), ("size", config.image_size)):
        value = preprocess.get(key, wanted)
        if value != wanted and value != [wanted, wanted]:
            raise ClipCheckpointError(path, f"preprocess_cfg.{key}", f"{value!r} is not supported (only {wanted!r})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file (safetensors, or a weights-only torch pickle), `module.` removed."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, or a pickle holding more than tensors
        raise ClipCheckpointError(path, "<file>", f"cannot be read: {exc}") from None
    # open_clip's loader also unwraps a training checkpoint ({"state_dict": ..., "epoch": ...}).
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ClipCheckpointError(path, "<file>", f"holds a {type(state).__name__}, not a state_dict")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        clean = key.removeprefix(DDP_PREFIX)
        if clean in out:
            raise ClipCheckpointError(path, key, f"duplicates {clean!r} once {DDP_PREFIX!r} is removed")
        out[clean] = value
    return out


def check_state_dict(model: nn.Module, state: dict[str, object], file: str | Path) -> None:
    """Raise ClipCheckpointError unless `state` has exactly `model`'s keys with the same shapes.

    A one-element `logit_scale` is reshaped to the model's 0-d one in place, as open_clip's
    loader does: some open_clip versions saved it as shape (1,).
    """
    expected = model.state_dict()
    for key, ref in expected.items():
        value = state.get(key)
        if value is None:
            raise ClipCheckpointError(file, key, "missing", expected_shape=tuple(ref.shape))
        if not isinstance(value, torch.Tensor):
            raise ClipCheckpointError(file, key, f"is a {type(value).__name__}, not a tensor")
        if key == "logit_scale" and value.numel() == 1:
            value = state[key] = value.reshape(ref.shape)
        if tuple(value.shape) != tuple(ref.shape):
            raise ClipCheckpointError(file, key, f"shape {tuple(value.shape)} but the network needs "
                                      f"{tuple(ref.shape)}", shape=tuple(value.shape),
                                      expected_shape=tuple(ref.shape))
        if not value.is_floating_point():
            raise ClipCheckpointError(file, key, f"dtype {value.dtype} but the network needs floats")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ClipCheckpointError(file, extra[0], "unexpected key (not part of the network)", unexpected=extra)


def load_clip(folder: str | Path, name: str, device: str | torch.device = "cpu") -> ClipModel:
    """Load `folder/name/` strictly into a float32 ClipModel in eval mode on `device`."""
    model_dir = Path(folder) / name
    weights = find_weights(model_dir)
    config = read_config(model_dir, name)
    state = read_state_dict(weights)
    with torch.device("meta"):
        model = ClipModel(config)  # no memory and no random init: every tensor comes from `state`
    check_state_dict(model, state, weights)
    # assign=True adopts the loaded tensors instead of copying them into fresh ones (ViT-L-14
    # is 1.7 GB in float32); fp16 files become float32 in the .float() below.
    model.load_state_dict(state, strict=True, assign=True)
    model.attn_mask = causal_mask(config.context_length)  # buffers are not in the file
    return model.float().eval().to(device)


def save_clip(model: ClipModel, folder: str | Path, name: str) -> Path:
    """Write `model` as `folder/name/open_clip_model.safetensors` + `open_clip_config.json`; returns the weights path."""
    from safetensors.torch import save_file

    model_dir = Path(folder) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    path = model_dir / SAFETENSORS_FILE
    save_file(state, str(path), metadata={"format": "pt"})
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    (model_dir / CONFIG_FILE).write_text(json.dumps({"model_cfg": model.config.to_open_clip(),
                                                     "preprocess_cfg": preprocess}, indent=2) + "\n")
    return path
