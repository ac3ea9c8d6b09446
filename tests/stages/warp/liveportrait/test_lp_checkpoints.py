"""Official checkpoint layout: a full-size random set loads strictly; corrupt sets fail by file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="LivePortrait networks need torch")

from stages.warp.liveportrait.checkpoints import (CheckpointError, build_networks, load_networks,  # noqa: E402
                                                  load_retargeting)
from stages.warp.liveportrait.config import CHECKPOINT_PATHS, FULL, RETARGETING_SUBDICTS  # noqa: E402
from stages.warp.liveportrait.random_weights import write_random_checkpoints  # noqa: E402

MANIFEST_FILES = {"appearance": "appearance_feature_extractor.pth", "motion": "motion_extractor.pth",
                  "warping": "warping_module.pth", "spade": "spade_generator.pth"}


@pytest.fixture(scope="module")
def full_set(tmp_path_factory: pytest.TempPathFactory):
    """A full-size random-weight set in the official layout (≈520 MB, written once, deleted after)."""
    root = tmp_path_factory.mktemp("lp_full")
    write_random_checkpoints(root, FULL, seed=7)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _retargeting(root: Path) -> dict:
    """Only the three MLPs, loaded from `root` (skips the 520 MB of base models)."""
    modules = build_networks(FULL, device="meta").modules_by_role()
    load_retargeting(root, modules)
    return modules


def _copy_with(full_set: Path, tmp_path: Path, replace: dict[str, object | None]) -> Path:
    """Link every file of `full_set` into a new root, except roles in `replace` (object → saved, None → absent)."""
    root = tmp_path / "ckpt"
    for role, rel in CHECKPOINT_PATHS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if role not in replace:
            path.symlink_to(full_set / rel)
        elif replace[role] is not None:
            torch.save(replace[role], path)
    return root


def test_full_modules_match_official_state_dict_layout(lp_manifest: dict) -> None:
    """Every full-size network has exactly the official keys, shapes, dtypes, kinds and counts."""
    modules = build_networks(FULL, device="meta").modules_by_role()
    files = lp_manifest["files"]
    entries = {role: files[name]["keys"] for role, name in MANIFEST_FILES.items()}
    counts = {role: files[name]["counts"] for role, name in MANIFEST_FILES.items()}
    for role, sub in RETARGETING_SUBDICTS.items():
        spec = files["stitching_retargeting_module.pth"]["sub_dicts"][sub]
        entries[role], counts[role] = spec["keys_after_prefix_strip"], spec["counts"]
    for role, module in modules.items():
        params = dict(module.named_parameters())
        mine = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch."), "parameter" if k in params else "buffer")
                for k, v in module.state_dict().items()}
        official = {e["key"]: (tuple(e["shape"]), e["dtype"], e["kind"]) for e in entries[role]}
        assert mine == official, role
        assert sum(p.numel() for p in module.parameters()) == counts[role]["parameters"], role
        assert sum(b.numel() for b in module.buffers()) == counts[role]["buffer_elements"], role


@pytest.mark.slow
def test_full_size_random_set_loads_and_runs(full_set: Path, lp_cases: dict) -> None:
    """The written full-size set loads strictly, keeps its values, and runs F→M→W→G at full-size shapes."""
    nets = load_networks(full_set, FULL)
    saved = torch.load(full_set / CHECKPOINT_PATHS["spade"], weights_only=True)
    assert torch.equal(nets.spade.G_middle_0.conv_0.weight_u, saved["G_middle_0.conv_0.weight_u"])
    bundle = torch.load(full_set / CHECKPOINT_PATHS["retargeting"], weights_only=True)
    assert torch.equal(nets.lip.mlp[0].weight, bundle["retarget_mouth"]["module.mlp.0.weight"])

    from stages.warp.liveportrait import keypoints as kpm
    shapes = lp_cases["full_size_shapes"]
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        f_s = nets.appearance(image)
        raw = nets.motion(image)
        x_s = kpm.transform_keypoint(kpm.refine_kp_info(raw))
        warped = nets.warping(f_s, kp_driving=x_s * 1.02, kp_source=x_s)
        out = nets.spade(warped["out"])
    assert list(f_s.shape) == shapes["F"]["outputs"]["feature_3d"]
    assert {k: list(v.shape) for k, v in raw.items()} == shapes["M"]["outputs"]
    assert {k: list(v.shape) for k, v in warped.items()} == shapes["W"]["outputs"]
    assert list(out.shape) == shapes["G"]["outputs"]["image"]
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_missing_file_names_the_file(full_set: Path, tmp_path: Path) -> None:
    """Without motion_extractor.pth, loading fails naming that file."""
    root = _copy_with(full_set, tmp_path, {"motion": None})
    with pytest.raises(CheckpointError) as err:
        load_networks(root, FULL)
    assert err.value.file == CHECKPOINT_PATHS["motion"]
    assert "motion_extractor.pth" in str(err.value)


def test_missing_key_names_file_and_key(full_set: Path, tmp_path: Path) -> None:
    """A stitching sub-dict without one weight fails naming the file, sub-dict and key."""
    bundle = torch.load(full_set / CHECKPOINT_PATHS["retargeting"], weights_only=True)
    del bundle["retarget_eye"]["module.mlp.4.bias"]
    root = _copy_with(full_set, tmp_path, {"retargeting": bundle})
    with pytest.raises(CheckpointError) as err:
        _retargeting(root)
    assert err.value.file.endswith("stitching_retargeting_module.pth[retarget_eye]")
    assert err.value.key == "mlp.4.bias"


def test_wrong_shape_names_file_and_key(full_set: Path, tmp_path: Path) -> None:
    """An F weight with the wrong shape fails naming the file, key and both shapes."""
    state = torch.load(full_set / CHECKPOINT_PATHS["appearance"], weights_only=True)
    state["resblocks_3d.3dr2.conv1.weight"] = torch.zeros(32, 32, 3, 3, 1)
    root = _copy_with(full_set, tmp_path, {"appearance": state})
    with pytest.raises(CheckpointError) as err:
        load_networks(root, FULL)
    assert err.value.file == CHECKPOINT_PATHS["appearance"]
    assert err.value.key == "resblocks_3d.3dr2.conv1.weight"
    assert "(32, 32, 3, 3, 1)" in str(err.value) and "(32, 32, 3, 3, 3)" in str(err.value)


def test_unexpected_key_is_rejected(full_set: Path, tmp_path: Path) -> None:
    """An extra key (e.g. a plain `weight` beside the spectral-norm `weight_orig`) fails strictly."""
    state = torch.load(full_set / CHECKPOINT_PATHS["appearance"], weights_only=True)
    state["second.weight_orig"] = state["second.weight"].clone()
    root = _copy_with(full_set, tmp_path, {"appearance": state})
    with pytest.raises(CheckpointError) as err:
        load_networks(root, FULL)
    assert err.value.key == "second.weight_orig"


def test_stitching_keys_load_with_or_without_module_prefix(full_set: Path, tmp_path: Path) -> None:
    """`module.mlp.0.weight`, `mlp.0.weight` and the flat `retarget_eye_module.…` form all load the same."""
    bundle = torch.load(full_set / CHECKPOINT_PATHS["retargeting"], weights_only=True)
    plain = {sub: {k.replace("module.", ""): v for k, v in sd.items()} for sub, sd in bundle.items()}
    flat = {f"{sub}_{k}": v for sub, sd in bundle.items() for k, v in sd.items()}
    loaded = []
    for i, variant in enumerate((bundle, plain, flat)):
        root = _copy_with(full_set, tmp_path / str(i), {"retargeting": variant})
        loaded.append(_retargeting(root)["eye"].mlp[10].bias)
    assert torch.equal(loaded[0], bundle["retarget_eye"]["module.mlp.10.bias"])
    assert torch.equal(loaded[0], loaded[1]) and torch.equal(loaded[0], loaded[2])


def test_pretrained_weights_folder_is_accepted_as_root(full_set: Path) -> None:
    """The root may be the repo root or its pretrained_weights folder."""
    assert _retargeting(full_set / "pretrained_weights")["stitching"].mlp[6].out_features == 65
