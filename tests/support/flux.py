"""Test helpers: a tiny random-weight Flux pipeline saved to a folder.

FLUX.1-schnell weights cannot be downloaded on a build machine, so tests build every Flux
component at toy size with random weights, tokenizers from a small local vocabulary, and save
them with save_pretrained in the same diffusers layout as the real release. The backend then
loads that folder exactly as it loads the real one. The shapes keep the real model's structure: an 8× VAE with 16 packed latent
channels (4 latent channels × 2×2 patches), CLIP pooled output and T5 sequence as conditioning.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

# Small enough that a 512² render takes well under a second on one CPU core.
_WIDTH = 32  # hidden size of both text encoders = the transformer's conditioning widths
_LATENT_CHANNELS = 4
_CLIP_MAX_TOKENS = 77  # the real CLIP-L context; FluxPipeline pads the prompt to it

_WORDS = ("a", "head", "and", "shoulders", "photo", "portrait", "of", "looking", "at", "the", "camera",
          "plain", "background", "soft", "light", "woman", "man", "person", "smiling", "with", "red", "hair")
"""Whole words of the portrait template and test prompts, so the tokenizers see real tokens."""


def _clip_tokenizer():
    """A CLIP BPE tokenizer over single characters, one merge level and the words above."""
    from transformers import CLIPTokenizer

    specials = ("<|startoftext|>", "<|endoftext|>")
    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = [*specials, *symbols, *(f"{s}</w>" for s in symbols)]
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        # Left-to-right merges build each word from its characters, ending in the word-final piece.
        current = word[0]
        for index, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if index == len(word) - 1 else "")
            merges.append((current, right))
            current += right
            if current not in pieces:
                pieces.append(current)
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}
    return CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), model_max_length=_CLIP_MAX_TOKENS)


def _t5_tokenizer():
    """A T5 Unigram tokenizer over the words above plus single characters (unigram scores)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -1.0) for word in _WORDS]
    pieces += [(char, -5.0) for char in string.ascii_lowercase + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """Save a random-weight FluxPipeline (toy widths, real structure) in `folder`; return it.

    Every weight is drawn under `seed` inside a forked RNG, so the same seed saves the same
    weights and the caller's global RNG state is left untouched.
    """
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=4 * _LATENT_CHANNELS, num_layers=1, num_single_layers=1,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=_WIDTH,
            pooled_projection_dim=_WIDTH, guidance_embeds=False, axes_dims_rope=(4, 4, 8))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=_WIDTH, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=_CLIP_MAX_TOKENS, projection_dim=_WIDTH,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), d_model=_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        # Four resolution levels: the real 8× spatial reduction, at 8 channels instead of 128–512.
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            latent_channels=_LATENT_CHANNELS, norm_num_groups=4, sample_size=64, use_quant_conv=False,
            use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    # schnell's scheduler settings: a fixed shift of 1, no resolution-dependent shift.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    pipeline = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                            text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)
    folder = Path(folder)
    pipeline.save_pretrained(folder)
    return folder
