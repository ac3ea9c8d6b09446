"""open_clip weight folders: a saved model loads back identically; broken folders fail by file and key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the CLIP networks need torch")
pytest.importorskip("safetensors", reason="open_clip_model.safetensors needs safetensors")

from safetensors.torch import save_file  # noqa: E402
from test_clip_model import EOT, TINY, random_model, tokens_with_eot  # noqa: E402

from stages.errors import StageInputError  # noqa: E402
from stages.verify.clip.checkpoints import (  # noqa: E402
    CONFIG_FILE,
    PICKLE_FILE,
    SAFETENSORS_FILE,
    ClipCheckpointError,
    load_clip,
    save_clip,
)
from stages.verify.clip.config import VIT_B_32  # noqa: E402

NAME = "tiny-clip"


def features(model) -> tuple:
    """Image and text features of fixed inputs."""
    pixels = torch.randn(2, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        return model.encode_image(pixels), model.encode_text(tokens_with_eot([6, 2, EOT], [8, EOT]))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny random model saved in the official layout, and the model itself."""
    folder = tmp_path_factory.mktemp("clip")
    model = random_model(TINY, seed=11)
    save_clip(model, folder, NAME)
    return folder, model


def write_state(folder: Path, state: dict, pickle: bool = False) -> Path:
    """A model folder holding `state` (and the tiny config): safetensors, or the torch pickle."""
    model_dir = folder / NAME
    model_dir.mkdir(parents=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps({"model_cfg": TINY.to_open_clip()}))
    if pickle:
        torch.save(state, model_dir / PICKLE_FILE)
        return model_dir / PICKLE_FILE
    save_file(state, str(model_dir / SAFETENSORS_FILE))
    return model_dir / SAFETENSORS_FILE


def test_save_then_load_gives_identical_outputs(saved) -> None:
    """save_clip → load_clip restores a float32 eval-mode model with bit-identical features."""
    folder, model = saved
    loaded = load_clip(folder, NAME)
    assert (folder / NAME / SAFETENSORS_FILE).is_file() and (folder / NAME / CONFIG_FILE).is_file()
    assert loaded.config == TINY and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for a, b in zip(features(model), features(loaded)):
        assert torch.equal(a, b)
    assert torch.equal(loaded.attn_mask, model.attn_mask)


def test_pickle_with_module_prefix_loads(saved, tmp_path: Path) -> None:
    """open_clip_pytorch_model.bin whose keys carry a DDP `module.` prefix loads to the same features."""
    _, model = saved
    write_state(tmp_path, {"module." + k: v for k, v in model.state_dict().items()}, pickle=True)
    for a, b in zip(features(model), features(load_clip(tmp_path, NAME))):
        assert torch.equal(a, b)


def test_one_element_logit_scale_and_half_precision_load(saved, tmp_path: Path) -> None:
    """A (1,)-shaped logit_scale and float16 tensors load as a 0-d scale and float32 weights."""
    _, model = saved
    state = {k: v.half() for k, v in model.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].reshape(1)
    write_state(tmp_path, state)
    loaded = load_clip(tmp_path, NAME)
    assert loaded.logit_scale.shape == () and loaded.visual.proj.dtype == torch.float32
    assert torch.equal(loaded.visual.proj, model.visual.proj.half().float())


@pytest.mark.parametrize("damage, key", [
    ("missing", "visual.ln_post.bias"),
    ("extra", "visual.transformer.resblocks.0.ls_1.gamma"),
    ("shape", "text_projection"),
])
def test_damaged_state_dict_names_file_and_key(saved, tmp_path: Path, damage: str, key: str) -> None:
    """A missing key, an extra key or a wrong shape raises ClipCheckpointError naming the file and the key."""
    _, model = saved
    state = dict(model.state_dict())
    if damage == "missing":
        del state[key]
    elif damage == "extra":
        state[key] = torch.ones(TINY.vision_width)
    else:
        state[key] = torch.zeros(TINY.text_width, TINY.embed_dim + 1)
    path = write_state(tmp_path, state)
    with pytest.raises(ClipCheckpointError) as caught:
        load_clip(tmp_path, NAME)
    assert caught.value.file == str(path) and caught.value.key == key
    assert str(path) in str(caught.value) and key in str(caught.value)
    assert isinstance(caught.value, StageInputError) and caught.value.field == "clip_weights_dir"


def test_missing_folder_names_the_expected_file(tmp_path: Path) -> None:
    """A model folder without weights raises ClipCheckpointError naming the expected safetensors path."""
    with pytest.raises(ClipCheckpointError, match=SAFETENSORS_FILE) as caught:
        load_clip(tmp_path, "ViT-B-32")
    assert caught.value.file == str(tmp_path / "ViT-B-32" / SAFETENSORS_FILE)


def test_corrupt_weight_file_is_refused(tmp_path: Path) -> None:
    """A weight file that is not safetensors raises ClipCheckpointError naming it."""
    model_dir = tmp_path / "ViT-B-32"
    model_dir.mkdir()
    (model_dir / SAFETENSORS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ClipCheckpointError, match="cannot be read") as caught:
        load_clip(tmp_path, "ViT-B-32")
    assert caught.value.file == str(model_dir / SAFETENSORS_FILE)


def test_unknown_name_without_config_file_is_refused(saved, tmp_path: Path) -> None:
    """Weights with neither open_clip_config.json nor a known model name raise, listing the known names."""
    _, model = saved
    write_state(tmp_path, dict(model.state_dict()))
    (tmp_path / NAME / CONFIG_FILE).unlink()
    with pytest.raises(ClipCheckpointError, match="ViT-L-14"):
        load_clip(tmp_path, NAME)


def test_known_name_without_config_file_uses_the_preset(tmp_path: Path) -> None:
    """Without open_clip_config.json the folder name picks the preset: ViT-B-32 weights are checked against it."""
    model_dir = tmp_path / "ViT-B-32"
    model_dir.mkdir()
    save_file({"logit_scale": torch.zeros(())}, str(model_dir / SAFETENSORS_FILE))
    with pytest.raises(ClipCheckpointError, match="missing") as caught:
        load_clip(tmp_path, "ViT-B-32")
    # The model's own tensors come first in its state_dict: the text positions, 77 × 512 for ViT-B-32.
    assert caught.value.key == "positional_embedding"
    assert caught.value.details["expected_shape"] == (VIT_B_32.context_length, VIT_B_32.text_width)


@pytest.mark.parametrize("model_cfg_patch, key", [
    ({"vision_cfg": {"ls_init_value": 1e-5}}, "vision_cfg.ls_init_value"),
    ({"text_cfg": {"hf_model_name": "roberta-base"}}, "text_cfg.hf_model_name"),
    ({"vision_cfg": {"layers": [3, 4, 6, 3]}}, "vision_cfg.layers"),
])
def test_config_file_with_unsupported_option_is_refused(saved, tmp_path: Path, model_cfg_patch: dict,
                                                        key: str) -> None:
    """An open_clip_config.json asking for layer scale, an HF text tower or a ResNet names the option."""
    _, model = saved
    write_state(tmp_path, dict(model.state_dict()))
    model_cfg = TINY.to_open_clip()
    for section, values in model_cfg_patch.items():
        model_cfg[section].update(values)
    (tmp_path / NAME / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg}))
    with pytest.raises(ClipCheckpointError) as caught:
        load_clip(tmp_path, NAME)
    assert caught.value.key == key and caught.value.file == str(tmp_path / NAME / CONFIG_FILE)


def test_config_file_with_other_normalisation_is_refused(saved, tmp_path: Path) -> None:
    """An open_clip_config.json whose preprocess mean is not OpenAI's raises, naming preprocess_cfg.mean."""
    _, model = saved
    write_state(tmp_path, dict(model.state_dict()))
    (tmp_path / NAME / CONFIG_FILE).write_text(json.dumps({"model_cfg": TINY.to_open_clip(),
                                                           "preprocess_cfg": {"mean": [0.5, 0.5, 0.5]}}))
    with pytest.raises(ClipCheckpointError) as caught:
        load_clip(tmp_path, NAME)
    assert caught.value.key == "preprocess_cfg.mean"


def test_config_file_decides_quick_gelu(saved, tmp_path: Path) -> None:
    """quick_gelu comes from open_clip_config.json, so the same weights load with exact GELU when it says so."""
    _, model = saved
    write_state(tmp_path, dict(model.state_dict()))
    exact = dataclasses.replace(TINY, quick_gelu=False)
    (tmp_path / NAME / CONFIG_FILE).write_text(json.dumps({"model_cfg": exact.to_open_clip()}))
    loaded = load_clip(tmp_path, NAME)
    assert loaded.config == exact
    assert not torch.equal(features(loaded)[0], features(model)[0])
