"""Test helpers: small random CLIP models and weight folders.

Real CLIP weights cannot be downloaded on a build machine, so tests and benchmarks build
models with random weights from a local generator and save them in the official layout,
next to a small merges file in open_clip's format.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from stages.verify.clip.checkpoints import save_clip
from stages.verify.clip.config import ClipConfig
from stages.verify.clip.model import ClipModel
from stages.verify.clip.tokenizer import MERGES_FILE_NAME, ClipTokenizer

SMALL_MERGES = ("p h", "ph o", "t o</w>", "pho to</w>", "o f</w>", "p e", "pe r", "o n</w>", "s on</w>",
                "per son</w>", "t a", "l k", "ta lk", "i n", "in g</w>", "talk ing</w>")
"""Enough merges that "a photo of a person talking" is a handful of tokens."""

_LAYER_NORM_SCALES = ("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")


def random_clip_model(config: ClipConfig, seed: int = 0) -> ClipModel:
    """A model whose every tensor is drawn from a local generator (LayerNorm scales near 1)."""
    model = ClipModel(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(_LAYER_NORM_SCALES):
                param.copy_(1 + 0.1 * noise)
            else:
                # 1/sqrt(fan-in) keeps activations O(1) through the layers, as a trained net's are.
                fan_in = param.shape[-1] if param.ndim >= 2 else 1
                param.copy_(noise * (0.1 if param.ndim < 2 else fan_in ** -0.5))
    return model


def write_small_merges(path: Path) -> Path:
    """SMALL_MERGES in open_clip's format (gzip, a header line, one merge per line)."""
    path.write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(SMALL_MERGES) + "\n").encode()))
    return path


def small_config(vocab_size: int) -> ClipConfig:
    """A two-layer CLIP on 32² images with the real 77-token context over a small vocabulary."""
    return ClipConfig(embed_dim=16, image_size=32, patch_size=8, vision_width=32, vision_layers=2,
                      vision_head_width=16, text_width=24, text_heads=2, text_layers=2, context_length=77,
                      vocab_size=vocab_size, quick_gelu=True)


def write_random_clip_folder(folder: Path, names: tuple[str, ...] = ("tiny-a", "tiny-b")) -> Path:
    """A `clip_weights_dir`: the small merges file and one random small model per name (seeds 0, 1, …)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = ClipTokenizer.from_merges_file(write_small_merges(folder / MERGES_FILE_NAME)).vocab_size
    for seed, name in enumerate(names):
        save_clip(random_clip_model(small_config(vocab_size), seed=seed), folder, name)
    return folder
