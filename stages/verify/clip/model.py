"""open_clip's ViT CLIP as plain torch modules: the same state_dict keys, shapes and math as `open_clip.CLIP`.

Pre-norm residual blocks with fused-QKV self-attention (nn.MultiheadAttention's parameter
layout, computed with scaled_dot_product_attention as open_clip's own `Attention` does), a
class-token image tower, and a causal text tower read out at the end-of-text token, which is
the largest token id in each row. No layer scale, no attentional pooling, no logit bias: the
ViT-B-32 and ViT-L-14 configs use none of them, so their keys do not exist.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from stages.verify.clip.config import ClipConfig


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI trained CLIP with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x · sigmoid(1.702 · x)."""
        return x * torch.sigmoid(1.702 * x)


def causal_mask(length: int) -> torch.Tensor:
    """Additive (length, length) mask: −inf above the diagonal, so position i attends to 0..i only."""
    return torch.full((length, length), float("-inf")).triu_(1)


class SelfAttention(nn.Module):
    """Multi-head self-attention keyed like nn.MultiheadAttention (in_proj_weight/bias, out_proj)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, W) → (B, L, W); `mask` is added to the (L, L) attention logits."""
        batch, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, hidden)),
            ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
            ("c_proj", nn.Linear(hidden, width)),
        ]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One pre-norm transformer layer."""
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks (`resblocks.{i}`)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, quick_gelu) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, W) → (B, L, W)."""
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    """Image tower: patchify, prepend the class token, transform, project the class token."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        width = config.vision_width
        self.image_size = config.image_size
        self.conv1 = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(config.grid_size ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, config.vision_layers, config.vision_heads,
                                       config.vision_mlp_ratio, config.quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, config.embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels → (B, embed_dim) unnormalised image features."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # (B, grid², width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        # LayerNorm is per token, so normalising only the class token equals open_clip's
        # "ln_post on every token, then take token 0", without the wasted work.
        return self.ln_post(x[:, 0]) @ self.proj


class ClipModel(nn.Module):
    """open_clip's `CLIP` for ViT towers: `encode_image`, `encode_text`, and the trained `logit_scale`."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.text_width))
        self.transformer = Transformer(config.text_width, config.text_layers, config.text_heads,
                                       config.text_mlp_ratio, config.quick_gelu)
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(torch.empty(config.text_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # a 0-d tensor, as in open_clip
        # Not persistent: open_clip rebuilds the mask instead of storing it in checkpoints.
        self.register_buffer("attn_mask", causal_mask(config.context_length), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """open_clip-like random initialisation (only meaningful for a model not loaded from weights)."""
        vision, text = self.config.vision_width, self.config.text_width
        nn.init.normal_(self.visual.class_embedding, std=vision ** -0.5)
        nn.init.normal_(self.visual.positional_embedding, std=vision ** -0.5)
        nn.init.normal_(self.visual.proj, std=vision ** -0.5)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=text ** -0.5)
        for tower, width in ((self.visual.transformer, vision), (self.transformer, text)):
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
                nn.init.zeros_(block.attn.in_proj_bias)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, 3, S, S) pixels from `to_clip_pixels` → (B, embed_dim); unit length when `normalize`."""
        size = self.config.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"pixels must be (B, 3, {size}, {size}), got {tuple(pixels.shape)}")
        features = self.visual(pixels)
        return F.normalize(features, dim=-1) if normalize else features

    def text_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids → (B, L, text_width) final-LayerNorm hidden states of every position."""
        if tokens.ndim != 2 or tokens.shape[1] > self.config.context_length:
            raise ValueError(f"tokens must be (B, L ≤ {self.config.context_length}), got {tuple(tokens.shape)}")
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = self.transformer(x, self.attn_mask[:length, :length])
        return self.ln_final(x)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, L) int64 token ids → (B, embed_dim), read at each row's end-of-text token."""
        hidden = self.text_hidden(tokens)
        # The end-of-text id is the largest in CLIP's vocabulary, so argmax finds it (as open_clip does).
        eot = hidden[torch.arange(hidden.shape[0], device=hidden.device), tokens.argmax(dim=-1)]
        features = eot @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features
