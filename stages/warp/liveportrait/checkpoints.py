"""Loading (and, for tests, writing) LivePortrait weights in the official release layout.

Five `.pth` files at their official relative paths (config.CHECKPOINT_PATHS). The four base
files are flat state_dicts; the stitching file is {retarget_shoulder, retarget_mouth,
retarget_eye} sub-state-dicts whose keys carry `module.` from a DDP wrapper. Like the official
`remove_ddp_dumplicate_key`, every `module.` substring is removed before matching, so keys
with and without it load. Matching is strict: every key present, none extra, every shape equal;
otherwise `CheckpointError` names the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stages.errors import StageInputError
from stages.warp.liveportrait.appearance import AppearanceFeatureExtractor
from stages.warp.liveportrait.config import (CHECKPOINT_PATHS, FULL, RETARGETING_SUBDICTS,
                                             LivePortraitConfig)
from stages.warp.liveportrait.motion_extractor import MotionExtractor
from stages.warp.liveportrait.retargeting import RetargetingMlp
from stages.warp.liveportrait.spade import SPADEDecoder
from stages.warp.liveportrait.warping import WarpingNetwork

CHECKPOINT_FIELD = "warp.liveportrait.checkpoint_dir"
DDP_MARKER = "module."


class CheckpointError(StageInputError):
    """A checkpoint file is missing or does not match the network: names the file and the key."""

    def __init__(self, file: str, key: str, message: str, **details: object) -> None:
        super().__init__(CHECKPOINT_FIELD, f"{file}: {key}: {message}", file=file, key=key, **details)
        self.file = file
        self.key = key


@dataclass(frozen=True)
class LivePortraitNetworks:
    """All seven networks, in eval mode, on one device."""

    appearance: AppearanceFeatureExtractor
    motion: MotionExtractor
    warping: WarpingNetwork
    spade: SPADEDecoder
    stitching: RetargetingMlp
    lip: RetargetingMlp
    eye: RetargetingMlp

    def modules_by_role(self) -> dict[str, nn.Module]:
        """Role name → module (roles: appearance, motion, warping, spade, stitching, lip, eye)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_VML_OPS = (torch.sqrt, torch.exp, torch.log, torch.sin, torch.cos, torch.tan, torch.tanh, torch.erf)
_vml_warm = False


def warm_up_vector_math() -> None:
    """Run each MKL-VML-backed torch op once, on this thread only, before any parallel call.

    torch sends float sqrt/exp/log/sin/cos/tan/tanh/erf to MKL VML. Measured here (Xeon with
    AVX512-FP16, torch 2.13 CPU, MKL 2024.2, 2 threads): when the process's first VML call is
    split across two OpenMP threads, the second thread's half sometimes comes out with ~2e-4
    relative error instead of 1 ulp (LN's sqrt in M: logits off by up to 9e-5; 6 of 46 cold
    runs). One single-threaded call first avoided it in 46 of 46 runs. Idempotent.
    """
    global _vml_warm
    if not _vml_warm:
        tiny = torch.ones(8)  # far below torch's parallel grain, so it runs on this thread
        for op in _VML_OPS:
            op(tiny)
        _vml_warm = True


def build_networks(config: LivePortraitConfig = FULL, device: str | torch.device = "cpu") -> LivePortraitNetworks:
    """Construct every network for `config` in eval mode (and warm up vector math once).

    On device "meta" nothing is allocated or initialised (weights come from `load_networks`).
    """
    warm_up_vector_math()
    with torch.device(device):
        retargeting = config.stitching_retargeting_module_params
        nets = LivePortraitNetworks(
            appearance=AppearanceFeatureExtractor(config.appearance_feature_extractor_params),
            motion=MotionExtractor(config.motion_extractor_params),
            warping=WarpingNetwork(config.warping_module_params),
            spade=SPADEDecoder(config.spade_generator_params),
            stitching=RetargetingMlp(retargeting.stitching),
            lip=RetargetingMlp(retargeting.lip),
            eye=RetargetingMlp(retargeting.eye))
    for module in nets.modules_by_role().values():
        module.eval()
    return nets


def strip_ddp(state: Mapping[str, torch.Tensor], file: str) -> dict[str, torch.Tensor]:
    """Remove every `module.` substring from the keys (official rule); a collision is an error."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        clean = key.replace(DDP_MARKER, "")
        if clean in out:
            raise CheckpointError(file, key, f"duplicates {clean!r} once 'module.' is removed")
        out[clean] = value
    return out


def check_state_dict(module: nn.Module, state: Mapping[str, object], file: str) -> None:
    """Raise CheckpointError unless `state` has exactly `module`'s keys with the same shapes."""
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(file, key, "missing", expected_shape=tuple(ref.shape))
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(file, key, f"is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(file, key, f"shape {tuple(value.shape)} but the network needs {tuple(ref.shape)}",
                                  shape=tuple(value.shape), expected_shape=tuple(ref.shape))
        if value.is_floating_point() != ref.is_floating_point():
            raise CheckpointError(file, key, f"dtype {value.dtype} but the network needs {ref.dtype}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(file, extra[0], "unexpected key (not part of the network)", unexpected=extra)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], file: str) -> nn.Module:
    """Check then load `state` into `module` (keys with `module.` accepted); returns the module.

    A module on the meta device is materialised on the CPU first.
    """
    state = strip_ddp(state, file)
    check_state_dict(module, state, file)
    if any(t.is_meta for t in module.state_dict().values()):
        module.to_empty(device="cpu")
    module.load_state_dict(state, strict=True)
    return module.eval()


def resolve_checkpoint(root: str | Path, role: str) -> Path:
    """The file for `role` under `root`: the repo root, or its `pretrained_weights` folder."""
    rel = CHECKPOINT_PATHS[role]
    root = Path(root)
    for candidate in (root / rel, root / rel.removeprefix("pretrained_weights/")):
        if candidate.is_file():
            return candidate
    raise CheckpointError(rel, "<file>", f"not found under {root}", role=role)


def read_checkpoint(path: Path, rel: str) -> dict:
    """torch.load a state_dict file safely (tensors only, no pickled code)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or not a plain-tensor pickle
        raise CheckpointError(rel, "<file>", f"cannot be read: {exc}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(rel, "<file>", f"holds a {type(obj).__name__}, not a state_dict")
    return dict(obj)


def split_retargeting(obj: Mapping[str, object], rel: str) -> dict[str, Mapping[str, torch.Tensor]]:
    """The stitching file → {'stitching', 'lip', 'eye'} sub-state-dicts.

    Also accepts the flattened third-party form `retarget_shoulder_module.mlp.0.bias`.
    """
    out = {}
    for role, sub in RETARGETING_SUBDICTS.items():
        if isinstance(obj.get(sub), Mapping):
            out[role] = obj[sub]
            continue
        flat = {k[len(sub):].lstrip("_."): v for k, v in obj.items() if k.startswith(sub)}
        if not flat:
            raise CheckpointError(rel, sub, "missing sub-state-dict", present=sorted(obj)[:10])
        out[role] = flat
    return out


def load_retargeting(root: str | Path, modules: Mapping[str, nn.Module]) -> None:
    """Load the stitching file's three sub-dicts into modules['stitching'|'lip'|'eye'], strictly."""
    rel = CHECKPOINT_PATHS["retargeting"]
    subs = split_retargeting(read_checkpoint(resolve_checkpoint(root, "retargeting"), rel), rel)
    for role, state in subs.items():
        load_strict(modules[role], state, f"{rel}[{RETARGETING_SUBDICTS[role]}]")


def load_networks(root: str | Path, config: LivePortraitConfig = FULL,
                  device: str | torch.device = "cpu") -> LivePortraitNetworks:
    """Load all seven networks from the official file layout under `root`, strictly, in eval mode."""
    nets = build_networks(config, device="meta")
    modules = nets.modules_by_role()
    for role in ("appearance", "motion", "warping", "spade"):
        rel = CHECKPOINT_PATHS[role]
        load_strict(modules[role], read_checkpoint(resolve_checkpoint(root, role), rel), rel)
    load_retargeting(root, modules)
    for module in modules.values():
        module.to(device)
    return nets
