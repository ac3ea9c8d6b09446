"""A configured model backend whose weights are missing: refuse clearly, or fall back once as configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from vortexd import pipeline
from vortexd.backends import BackendUnavailable
from vortexd.settings import Settings
from tests.support.daemon import DaemonProcess, write_config


def test_missing_liveportrait_weights_refuse_with_the_reason(tmp_path: Path) -> None:
    """warp_backend=liveportrait with an empty weights folder raises, naming the missing checkpoint file."""
    pytest.importorskip("torch", reason="the LivePortrait backend needs torch")
    settings = Settings(output_dir=tmp_path, warp_backend="liveportrait", liveportrait_weights_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="appearance_feature_extractor.pth"):
        pipeline.Backends(settings).warp


def test_unset_weights_dir_is_named_in_the_error(tmp_path: Path) -> None:
    """warp_backend=liveportrait without liveportrait_weights_dir says which setting is missing."""
    settings = Settings(output_dir=tmp_path, warp_backend="liveportrait")
    with pytest.raises(BackendUnavailable, match="liveportrait_weights_dir"):
        pipeline.Backends(settings).warp


def test_fallback_policy_uses_the_mesh_warp(tmp_path: Path) -> None:
    """With warp_fallback=mesh, missing LivePortrait weights give the mesh warp instead."""
    settings = Settings(output_dir=tmp_path, warp_backend="liveportrait", warp_fallback="mesh")
    assert pipeline.Backends(settings).warp.name == "mesh"


@pytest.mark.slow
@pytest.mark.parametrize("settings, package, named", [
    ({"warp_backend": "liveportrait"}, None, "liveportrait_weights_dir"),
    ({"image_backend": "flux", "flux_weights_dir": "{empty}"}, "diffusers", "model_index.json"),
    ({"verify_backend": "clip", "clip_weights_dir": "{empty}"}, "torch", "bpe_simple_vocab_16e6.txt.gz"),
], ids=["liveportrait", "flux", "clip"])
def test_daemon_refuses_to_start_without_its_weights(tmp_path: Path, settings: dict, package: str | None,
                                                     named: str) -> None:
    """vortexd serve with a model backend whose weights are missing exits non-zero before READY, saying what is missing."""
    if package is not None:
        pytest.importorskip(package, reason=f"this backend needs {package}")
    (tmp_path / "empty").mkdir()
    settings = {key: value.format(empty=tmp_path / "empty") for key, value in settings.items()}
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, **settings))
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        daemon.start(timeout_s=120)
    assert named in str(info.value)
