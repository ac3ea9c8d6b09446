"""verify_backend = "clip": CLIP scores join the verdict; missing weights refuse or fall back, as configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the CLIP verify backend needs torch")

from tests.support.clip import write_random_clip_folder  # noqa: E402
from vortexd.backends import BackendUnavailable, Backends  # noqa: E402
from vortexd.recipe import parse_recipe  # noqa: E402
from vortexd.render import render_slot  # noqa: E402
from vortexd.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow


def _recipe(tmp_path: Path, slot_id: str):
    return parse_recipe({"slot_id": slot_id, "actor": {"prompt": "an astronaut"},
                         "speech": {"text": "Hello there, and welcome."}, "output": {"duration_s": 2}}, tmp_path)


def _clip_settings(tmp_path: Path, **overrides) -> Settings:
    return Settings(output_dir=tmp_path / "out", verify_backend="clip", clip_models=["tiny-a", "tiny-b"],
                    **overrides)


def test_rendered_slot_verdict_carries_the_ensemble_scores(tmp_path: Path) -> None:
    """A 2 s slot verified by a two-model ensemble: its manifest verdict holds both models' scores and passes."""
    settings = _clip_settings(tmp_path, clip_weights_dir=write_random_clip_folder(tmp_path / "clip"))
    result = render_slot(_recipe(tmp_path, "clip"), settings, settings.output_dir)
    manifest = json.loads((result.slot_dir / "manifest.json").read_text())
    verdict, clip = manifest["verdict"], manifest["verdict"]["clip"]
    assert manifest["backends"]["verify"] == "objective+clip"
    assert clip["models"] == ["tiny-a", "tiny-b"] and clip["frames_scored"] == 2
    assert clip["caption"] == "a photo of an astronaut"
    # Talking frames of the same portrait stay close to it, even for random networks.
    assert settings.clip_min_identity <= clip["identity_min"] <= clip["identity_mean"] <= 1.0
    assert verdict["passed"], verdict["problems"]


def test_identity_floor_above_the_measured_value_fails_the_slot(tmp_path: Path) -> None:
    """With clip_min_identity = 1 no talking slot can pass, and the problem names the CLIP identity."""
    settings = _clip_settings(tmp_path, clip_weights_dir=write_random_clip_folder(tmp_path / "clip"),
                              clip_min_identity=1.0)
    result = render_slot(_recipe(tmp_path, "strict"), settings, settings.output_dir)
    verdict = result.manifest["verdict"]
    assert not verdict["passed"] and any("CLIP identity" in p for p in verdict["problems"])


def test_missing_weights_refuse_naming_the_file(tmp_path: Path) -> None:
    """An empty clip_weights_dir makes the CLIP backend unavailable, naming the merges file; nothing is published."""
    (tmp_path / "empty").mkdir()
    settings = _clip_settings(tmp_path, clip_weights_dir=tmp_path / "empty")
    with pytest.raises(BackendUnavailable, match="bpe_simple_vocab_16e6.txt.gz"):
        render_slot(_recipe(tmp_path, "refused"), settings, settings.output_dir)
    assert not (settings.output_dir / "refused").exists()


def test_unset_weights_dir_is_named(tmp_path: Path) -> None:
    """verify_backend = "clip" without clip_weights_dir says which setting is missing."""
    with pytest.raises(BackendUnavailable, match="clip_weights_dir"):
        Backends(_clip_settings(tmp_path)).clip


def test_fallback_verifies_objectively(tmp_path: Path) -> None:
    """With verify_fallback = "objective", missing weights give a verdict without CLIP scores that still passes."""
    settings = _clip_settings(tmp_path, clip_weights_dir=tmp_path / "nowhere", verify_fallback="objective")
    result = render_slot(_recipe(tmp_path, "fallback"), settings, settings.output_dir)
    verdict = result.manifest["verdict"]
    assert verdict["clip"] is None and verdict["passed"], verdict["problems"]


def test_daemon_publishes_with_clip_scores(tmp_path: Path) -> None:
    """A real daemon with the CLIP ensemble publishes a submitted slot whose verdict has CLIP scores."""
    import time

    from tests.support.daemon import DaemonProcess, write_config

    clip_dir = write_random_clip_folder(tmp_path / "clip")
    config = write_config(tmp_path, verify_backend="clip", clip_weights_dir=str(clip_dir),
                          clip_models=["tiny-a", "tiny-b"])
    daemon = DaemonProcess(tmp_path, config)
    daemon.start(timeout_s=120)
    try:
        recipe = {"slot_id": "clip-daemon", "speech": {"text": "Hello from the daemon."}, "output": {"duration_s": 2}}
        assert daemon.request("submit", {"recipe": recipe})["ok"], daemon.log_tail()
        manifest_path = tmp_path / "out" / "clip-daemon" / "manifest.json"
        deadline = time.monotonic() + 60
        while not manifest_path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    verdict = json.loads(manifest_path.read_text())["verdict"]
    assert verdict["clip"]["models"] == ["tiny-a", "tiny-b"] and verdict["passed"], verdict["problems"]
