"""image_backend = "flux": a prompt goes through Flux and its face gate; missing weights refuse or fall back."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the Flux image backend needs diffusers")

from stages.errors import NoFaceError  # noqa: E402
from tests.support.flux import build_tiny_flux  # noqa: E402
from vortexd.backends import BackendUnavailable  # noqa: E402
from vortexd.recipe import parse_recipe  # noqa: E402
from vortexd.render import render_slot  # noqa: E402
from vortexd.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow


def _recipe(tmp_path: Path, slot_id: str, **actor):
    return parse_recipe({"slot_id": slot_id, "actor": actor, "speech": {"text": "Hello there."},
                         "output": {"duration_s": 2}}, tmp_path)


def test_prompt_goes_through_flux_and_its_face_gate(tmp_path: Path) -> None:
    """A random-weight Flux draws no face: the slot is refused on actor.prompt and nothing is published."""
    settings = Settings(output_dir=tmp_path / "out", image_backend="flux",
                        flux_weights_dir=build_tiny_flux(tmp_path / "flux"))
    with pytest.raises(NoFaceError, match="actor.prompt") as info:
        render_slot(_recipe(tmp_path, "flux", prompt="a smiling woman"), settings, settings.output_dir)
    assert "3" in str(info.value)  # it says how many pictures it tried
    assert not (settings.output_dir / "flux").exists()


def test_recipe_image_wins_over_flux(tmp_path: Path, shared_dir: Path) -> None:
    """With Flux configured, a recipe that brings its own image renders from that image."""
    import shutil

    shutil.copy(shared_dir / "faces" / "s10.jpg", tmp_path / "face.jpg")
    settings = Settings(output_dir=tmp_path / "out", image_backend="flux",
                        flux_weights_dir=build_tiny_flux(tmp_path / "flux"), verify=False)
    result = render_slot(_recipe(tmp_path, "own", image="face.jpg", prompt="ignored"), settings, settings.output_dir)
    assert result.manifest["actor_source"].endswith("face.jpg") and result.manifest["backends"]["image"] == "library"


def test_missing_weights_refuse_naming_the_setting(tmp_path: Path) -> None:
    """An empty flux_weights_dir makes the backend unavailable, naming the missing model_index.json."""
    (tmp_path / "empty").mkdir()
    settings = Settings(output_dir=tmp_path / "out", image_backend="flux", flux_weights_dir=tmp_path / "empty")
    with pytest.raises(BackendUnavailable, match="model_index.json"):
        render_slot(_recipe(tmp_path, "refused", prompt="a man"), settings, settings.output_dir)
    assert not (settings.output_dir / "refused").exists()


def test_fallback_serves_prompts_from_the_library(tmp_path: Path) -> None:
    """With image_fallback = "library" and no weights, a prompt renders from the sample portrait."""
    settings = Settings(output_dir=tmp_path / "out", image_backend="flux", image_fallback="library", verify=False)
    result = render_slot(_recipe(tmp_path, "fallback", prompt="a man"), settings, settings.output_dir)
    assert result.manifest["actor_source"] == "builtin:astronaut"


def test_a_flux_that_draws_no_face_does_not_stop_the_start_up(tmp_path: Path) -> None:
    """The daemon's warm-up runs Flux once but warms the slot on the sample actor: random tiny
    weights draw no face (a prompt slot with them is refused), and the start-up still succeeds."""
    from vortexd import pipeline
    from vortexd.backends import Backends
    from vortexd.slot_runner import WARM_UP_PROMPT, SlotRunner

    settings = Settings(output_dir=tmp_path / "out", image_backend="flux", verify=False,
                        flux_weights_dir=build_tiny_flux(tmp_path / "flux"))
    backends = Backends(settings)
    try:
        with pytest.raises(NoFaceError):
            backends.flux.make_actor(WARM_UP_PROMPT, seed=0)
        runner = SlotRunner(settings, backends, settings.output_dir)
        slab = pipeline.allocate_slab(settings.warp_chunk_frames)
        runner.warm_up(slab)
        assert slab.any(), "the warm-up chunk was not warped"
    finally:
        backends.close()
