"""open_clip's CLIP networks: full-size key layout and size, and the behaviour of a tiny random model."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch", reason="the CLIP networks need torch")

from stages.verify.clip.config import CONFIGS, VIT_B_32, VIT_L_14, ClipConfig  # noqa: E402
from stages.verify.clip.model import ClipModel  # noqa: E402
from tests.support.clip import random_clip_model  # noqa: E402

TINY = ClipConfig(embed_dim=16, image_size=32, patch_size=8, vision_width=32, vision_layers=2,
                  vision_head_width=16, text_width=24, text_heads=2, text_layers=2, context_length=12,
                  vocab_size=50, quick_gelu=True)
EOT = TINY.vocab_size - 1  # like CLIP's <end_of_text>, the largest id


def expected_shapes(c: ClipConfig) -> dict[str, tuple[int, ...]]:
    """open_clip `CLIP` state_dict key → shape, written out from open_clip's model.py/transformer.py."""
    def tower(prefix: str, width: int, layers: int, mlp_ratio: float) -> dict[str, tuple[int, ...]]:
        hidden = int(width * mlp_ratio)
        out = {}
        for i in range(layers):
            b = f"{prefix}resblocks.{i}."
            out.update({b + "ln_1.weight": (width,), b + "ln_1.bias": (width,),
                        b + "attn.in_proj_weight": (3 * width, width), b + "attn.in_proj_bias": (3 * width,),
                        b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
                        b + "ln_2.weight": (width,), b + "ln_2.bias": (width,),
                        b + "mlp.c_fc.weight": (hidden, width), b + "mlp.c_fc.bias": (hidden,),
                        b + "mlp.c_proj.weight": (width, hidden), b + "mlp.c_proj.bias": (width,)})
        return out

    vw, tw = c.vision_width, c.text_width
    return {
        "visual.conv1.weight": (vw, 3, c.patch_size, c.patch_size),
        "visual.class_embedding": (vw,),
        "visual.positional_embedding": ((c.image_size // c.patch_size) ** 2 + 1, vw),
        "visual.ln_pre.weight": (vw,), "visual.ln_pre.bias": (vw,),
        **tower("visual.transformer.", vw, c.vision_layers, c.vision_mlp_ratio),
        "visual.ln_post.weight": (vw,), "visual.ln_post.bias": (vw,),
        "visual.proj": (vw, c.embed_dim),
        "token_embedding.weight": (c.vocab_size, tw),
        "positional_embedding": (c.context_length, tw),
        **tower("transformer.", tw, c.text_layers, c.text_mlp_ratio),
        "ln_final.weight": (tw,), "ln_final.bias": (tw,),
        "text_projection": (tw, c.embed_dim),
        "logit_scale": (),
    }


def meta_model(config: ClipConfig) -> ClipModel:
    """The full network on the meta device: shapes only, no memory."""
    with torch.device("meta"):
        return ClipModel(config)


def random_model(config: ClipConfig = TINY, seed: int = 0) -> ClipModel:
    """A random model of `config` (TINY by default) from a local generator."""
    return random_clip_model(config, seed)


def tokens_with_eot(*rows: list[int]) -> torch.Tensor:
    """Rows of ids padded with zeros to the context length."""
    out = torch.zeros(len(rows), TINY.context_length, dtype=torch.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("config", [VIT_B_32, VIT_L_14], ids=["ViT-B-32", "ViT-L-14"])
def test_full_size_state_dict_matches_open_clip_keys_and_shapes(config: ClipConfig) -> None:
    """Full-size ViT-B-32 / ViT-L-14 have exactly open_clip CLIP's state_dict keys and shapes."""
    state = meta_model(config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(config)


@pytest.mark.parametrize("name, params", [("ViT-B-32", 151_277_313), ("ViT-L-14", 427_616_513)])
def test_full_size_parameter_count_matches_open_clip(name: str, params: int) -> None:
    """ViT-B-32 has 151,277,313 parameters and ViT-L-14 427,616,513, as open_clip's CLIP."""
    assert sum(p.numel() for p in meta_model(CONFIGS[name]).parameters()) == params


def test_presets_carry_open_clip_numbers() -> None:
    """Presets hold model_configs/ViT-B-32.json and ViT-L-14.json; -quickgelu differs only in the activation."""
    assert (VIT_B_32.embed_dim, VIT_B_32.patch_size, VIT_B_32.vision_width, VIT_B_32.vision_layers,
            VIT_B_32.vision_heads, VIT_B_32.text_width, VIT_B_32.text_heads) == (512, 32, 768, 12, 12, 512, 8)
    assert (VIT_L_14.embed_dim, VIT_L_14.patch_size, VIT_L_14.vision_width, VIT_L_14.vision_layers,
            VIT_L_14.vision_heads, VIT_L_14.text_width, VIT_L_14.text_heads) == (768, 14, 1024, 24, 16, 768, 12)
    assert CONFIGS["ViT-L-14-quickgelu"] == dataclasses.replace(VIT_L_14, quick_gelu=True)
    assert not VIT_B_32.quick_gelu and CONFIGS["ViT-B-32-quickgelu"].quick_gelu


def test_attention_mask_is_causal_and_not_saved() -> None:
    """The causal attn_mask is a buffer left out of the state_dict (as open_clip's)."""
    model = ClipModel(TINY)
    assert "attn_mask" not in model.state_dict()
    mask = model.attn_mask
    assert mask.shape == (TINY.context_length, TINY.context_length)
    assert torch.isneginf(mask[0, 1]) and mask[1, 0] == 0 and mask[3, 3] == 0


def test_encoders_return_unit_features_of_embed_dim() -> None:
    """encode_image and encode_text give (B, embed_dim) features of unit length when normalised."""
    model = random_model()
    pixels = torch.randn(3, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens_with_eot([3, 7, EOT], [5, EOT]), normalize=True)
        raw = model.encode_image(pixels)
    assert image.shape == (3, TINY.embed_dim) and text.shape == (2, TINY.embed_dim)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))  # normalize=False leaves the raw length
    assert not torch.allclose(image[0], image[1])  # different images, different features


def test_encoders_are_deterministic() -> None:
    """The same input gives bit-identical features on repeated calls."""
    model = random_model()
    pixels = torch.randn(2, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(2))
    tokens = tokens_with_eot([4, 9, 2, EOT])
    with torch.inference_mode():
        assert torch.equal(model.encode_image(pixels), model.encode_image(pixels))
        assert torch.equal(model.encode_text(tokens), model.encode_text(tokens))


def test_text_feature_is_read_at_the_end_of_text_token() -> None:
    """Changing a token after EOT leaves the text feature unchanged; changing one before EOT changes it."""
    model = random_model()
    base = tokens_with_eot([4, 9, 2, EOT])
    after, before = base.clone(), base.clone()
    after[0, 5] = 11
    before[0, 1] = 11
    with torch.inference_mode():
        ref, feat_after, feat_before = (model.encode_text(t) for t in (base, after, before))
    torch.testing.assert_close(feat_after, ref, rtol=0, atol=1e-6)
    assert (feat_before - ref).abs().max() > 1e-3


def test_text_attention_is_causal() -> None:
    """Changing token k leaves the hidden states of positions before k unchanged and changes position k."""
    model = random_model()
    base = tokens_with_eot([4, 9, 2, 6, 8, EOT])
    changed = base.clone()
    changed[0, 3] = 13
    with torch.inference_mode():
        a, b = model.text_hidden(base), model.text_hidden(changed)
    torch.testing.assert_close(b[0, :3], a[0, :3], rtol=0, atol=1e-6)
    assert (b[0, 3] - a[0, 3]).abs().max() > 1e-3


def test_quick_gelu_changes_the_features() -> None:
    """The same weights give different features with QuickGELU and with exact GELU."""
    quick = random_model(TINY)
    exact = ClipModel(dataclasses.replace(TINY, quick_gelu=False)).eval()
    exact.load_state_dict(quick.state_dict())
    pixels = torch.randn(1, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert (quick.encode_image(pixels) - exact.encode_image(pixels)).abs().max() > 1e-4


def test_encode_image_refuses_wrong_pixel_shape() -> None:
    """Pixels not (B, 3, S, S) raise a ValueError naming the expected shape."""
    model = random_model()
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        model.encode_image(torch.zeros(1, 3, 64, 64))
