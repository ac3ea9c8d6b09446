"""Configs: same keys as models.yaml, small configs from cases.json, importable without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stages.errors import StageInputError
from stages.warp.liveportrait.config import (FULL, MotionConfig, SpadeConfig, WarpingConfig,
                                             config_from_model_params, from_mapping, small_config_from_cases)


def test_package_imports_without_torch(repo_root: Path) -> None:
    """`import stages.warp.liveportrait` and its configs work when torch cannot be imported."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch blocked for this test")
        sys.meta_path.insert(0, Block())
        import stages.warp.liveportrait as lp
        assert lp.FULL.warping_module_params.num_kp == 21
        assert "torch" not in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_full_config_equals_models_yaml(lp_cases: dict) -> None:
    """The models.yaml sections recorded in cases.json parse to exactly FULL."""
    assert config_from_model_params(lp_cases["full_configs"]) == FULL


def test_small_configs_come_from_cases(lp_cases: dict) -> None:
    """Small F/M/W/G configs carry every cases.json value; the S MLPs stay full size."""
    small = small_config_from_cases(lp_cases)
    spec = lp_cases["small_configs"]
    assert small.appearance_feature_extractor_params.block_expansion == spec["F"]["block_expansion"]
    assert small.motion_extractor_params.stage_layout() == (tuple(spec["M"]["depths"]), tuple(spec["M"]["dims"]))
    assert small.warping_module_params.dense_motion_params.compress == spec["W"]["dense_motion_params"]["compress"]
    assert small.spade_generator_params.out_channels == spec["G"]["out_channels"]
    assert small.stitching_retargeting_module_params == FULL.stitching_retargeting_module_params


@pytest.mark.parametrize("which", ["full", "small"])
def test_chain_channels_are_consistent(which: str, lp_cases: dict) -> None:
    """F's C·D feeds W's max_features, and W's output width is G's input width."""
    cfg = FULL if which == "full" else small_config_from_cases(lp_cases)
    f, w, g = cfg.appearance_feature_extractor_params, cfg.warping_module_params, cfg.spade_generator_params
    assert f.reshape_channel * f.reshape_depth == w.max_features
    assert f.reshape_channel == w.reshape_channel
    assert w.out_channels == g.input_channels


def test_convnextv2_tiny_layout() -> None:
    """The named backbone resolves to ConvNeXt-V2-tiny depths and dims."""
    assert MotionConfig().stage_layout() == ((3, 3, 9, 3), (96, 192, 384, 768))


def test_unknown_key_is_reported_with_its_field() -> None:
    """A misspelt config key fails, naming where it was."""
    with pytest.raises(StageInputError) as err:
        from_mapping(WarpingConfig, {"num_kp": 21, "dense_motion_params": {"compres": 4}}, "warping_module_params")
    assert err.value.field == "warping_module_params.dense_motion_params"
    assert "compres" in err.value.message


def test_bad_value_type_is_reported() -> None:
    """A non-integer width fails, naming the field."""
    with pytest.raises(StageInputError) as err:
        from_mapping(SpadeConfig, {"block_expansion": "64"}, "spade_generator_params")
    assert err.value.field == "spade_generator_params.block_expansion"


def test_unknown_backbone_is_rejected() -> None:
    """Only convnextv2_tiny (or explicit depths/dims) can be built."""
    with pytest.raises(StageInputError) as err:
        MotionConfig(backbone="resnet50").stage_layout()
    assert err.value.field == "motion_extractor_params.backbone"
