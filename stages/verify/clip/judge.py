"""CLIP scores for a rendered slot: does it still show the actor, and does it match the prompt?

Two questions, answered on frames sampled across the slot by every model of the ensemble
(open_clip ViT-B-32 + ViT-L-14 on a GPU node) and averaged over the models:

- identity: cosine similarity of each sampled frame's image embedding to the actor's source
  portrait. Talking, blinking and head sway keep it high; a warp that smears the face, or a
  frame that lost the person, pulls it down. The slot's figure is its *minimum* over the
  samples, because one broken second is enough to take a slot off air.
- prompt: cosine similarity of the frames to the text "a photo of <actor prompt>" (or a generic
  talking-person caption without one). Reported for the operator's dashboard; it fails the
  slot only below a configured floor, off by default, since absolute CLIP text-image
  similarities depend on the caption's wording.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.errors import StageInputError
from stages.memory import in_region, load_in_region
from stages.verify.clip.tokenizer import MERGES_FILE_NAME

if TYPE_CHECKING:
    from vram import StagePool

DEFAULT_CAPTION = "a photo of a person talking"
SAMPLE_EVERY_N_FRAMES = 48
"""Sampled frames are at most this far apart (2 s at 24 fps): 24 frames for a 45 s slot."""


@dataclass(frozen=True)
class ClipScores:
    """What the CLIP ensemble measured on one slot (similarities are cosines in [-1, 1])."""

    models: tuple[str, ...]
    frames_scored: int
    caption: str
    identity_min: float
    identity_mean: float
    identity_min_frame: int  # slot frame where the identity is lowest
    prompt_mean: float

    def as_dict(self) -> dict:
        """Plain JSON-ready dict (for the verdict and the manifest)."""
        return asdict(self)


def caption_for(actor_prompt: str | None) -> str:
    """The text the frames are compared with: the actor's prompt as a photo caption, or a generic one."""
    if not actor_prompt:
        return DEFAULT_CAPTION
    prompt = " ".join(actor_prompt.split())
    return prompt if prompt.lower().startswith(("a photo", "a picture", "an image")) else f"a photo of {prompt}"


def sample_frame_indices(n_frames: int, every_n_frames: int = SAMPLE_EVERY_N_FRAMES) -> np.ndarray:
    """Frames to score: evenly spaced at most `every_n_frames` apart, the first and the last included."""
    if n_frames <= 0:
        raise StageInputError("frames", "no frames to score", n_frames=n_frames)
    count = int(np.ceil((n_frames - 1) / every_n_frames)) + 1
    return np.unique(np.linspace(0, n_frames - 1, count).round().astype(np.int64))


class ClipJudge:
    """An ensemble of loaded CLIP models and their tokenizer; `score` measures one slot."""

    def __init__(self, models: dict, tokenizer, device: str = "cpu", batch_frames: int = 8,
                 memory: StagePool | None = None) -> None:
        """`memory`: the daemon's clip region, which scoring runs inside (None: no region)."""
        if not models:
            raise StageInputError("clip_models", "at least one CLIP model is needed")
        self.models = models
        self.tokenizer = tokenizer
        self.device = device
        self.batch_frames = batch_frames
        self.memory = memory

    @classmethod
    def from_folder(cls, folder: Path, names: tuple[str, ...], device: str = "cpu",
                    memory: StagePool | None = None) -> "ClipJudge":
        """Load `names` (open_clip model names, each in `folder/<name>/`) and the merges file in
        `folder`; with `memory`, into that region."""
        from stages.verify.clip.checkpoints import load_clip
        from stages.verify.clip.tokenizer import ClipTokenizer

        folder = Path(folder)
        merges = folder / MERGES_FILE_NAME
        tokenizer = ClipTokenizer.from_merges_file(merges)
        models = load_in_region(memory, lambda: {name: _for_device(load_clip(folder, name), device) for name in names},
                                lambda loaded: loaded.values())
        for name, model in models.items():
            # A merges file from another tokenizer would index past (or under-use) the embedding.
            if model.config.vocab_size != tokenizer.vocab_size:
                raise StageInputError("clip_weights_dir", f"{merges} gives {tokenizer.vocab_size} tokens but "
                                      f"{name} embeds {model.config.vocab_size}", file=str(merges), model=name)
        return cls(models, tokenizer, device, memory=memory)

    def score(self, frames: np.ndarray, source_image: np.ndarray, actor_prompt: str | None = None,
              every_n_frames: int = SAMPLE_EVERY_N_FRAMES) -> ClipScores:
        """Score `frames` ((T, H, W, 3) uint8) against the actor's `source_image` and prompt."""
        import torch

        frames = _check_rgb("frames", frames, ndim=4)
        source = _check_rgb("source_image", source_image, ndim=3)
        picks = sample_frame_indices(len(frames), every_n_frames)
        caption = caption_for(actor_prompt)
        identity = np.zeros(len(picks), np.float64)
        prompt = np.zeros(len(picks), np.float64)
        with in_region(self.memory), torch.inference_mode():
            for model in self.models.values():
                tokens = self.tokenizer([caption], context_length=model.config.context_length)
                text = model.encode_text(torch.from_numpy(tokens).to(self.device), normalize=True)[0].float()
                reference = self._embed(model, source[None])[0]
                for start in range(0, len(picks), self.batch_frames):
                    batch = self._embed(model, frames[picks[start:start + self.batch_frames]])
                    identity[start:start + len(batch)] += (batch @ reference).double().cpu().numpy()
                    prompt[start:start + len(batch)] += (batch @ text).double().cpu().numpy()
        identity /= len(self.models)
        prompt /= len(self.models)
        worst = int(np.argmin(identity))
        return ClipScores(models=tuple(self.models), frames_scored=len(picks), caption=caption,
                          identity_min=round(float(identity[worst]), 4),
                          identity_mean=round(float(identity.mean()), 4),
                          identity_min_frame=int(picks[worst]), prompt_mean=round(float(prompt.mean()), 4))

    def _embed(self, model, images: np.ndarray):
        from stages.verify.clip.preprocess import to_clip_pixels

        dtype = next(model.parameters()).dtype
        pixels = to_clip_pixels(images, model.config.image_size).to(self.device, dtype)
        return model.encode_image(pixels, normalize=True).float()


def _for_device(model, device: str):
    """`model` on `device`: fp16 on a GPU (the ensemble's 580 M parameters are 2.3 GB in fp32, over
    the clip region's 1.25 GiB; fp16 is what the reference plan budgets), fp32 on the CPU."""
    import torch

    if str(device).startswith("cuda"):
        return model.to(device, torch.float16)
    return model.to(device)


def clip_problems(scores: ClipScores, min_identity: float, min_prompt: float) -> list[str]:
    """Why the scores fail the slot (empty when they pass)."""
    problems = []
    if scores.identity_min < min_identity:
        problems.append(f"CLIP identity drops to {scores.identity_min:.3f} at frame {scores.identity_min_frame} "
                        f"(need ≥ {min_identity:.3f}): the actor is not recognisable there")
    if scores.prompt_mean < min_prompt:
        problems.append(f"CLIP caption similarity {scores.prompt_mean:.3f} is under {min_prompt:.3f} "
                        f"for {scores.caption!r}")
    return problems


def _check_rgb(field: str, image: np.ndarray, ndim: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[-1] != 3:
        raise StageInputError(field, f"expected {'(T, H, W, 3)' if ndim == 4 else '(H, W, 3)'} uint8 RGB",
                              dtype=str(image.dtype), shape=tuple(image.shape))
    return image
