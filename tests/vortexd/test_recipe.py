"""Recipe parsing: strict fields, clear errors naming the field, paths confined to allowed roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vortexd.recipe import RecipeError, load_recipe, parse_recipe


def _minimal(**overrides):
    data = {"slot_id": "s1", "speech": {"text": "Hello there."}}
    data.update(overrides)
    return data


def test_defaults_give_a_45s_24fps_neutral_slot(tmp_path: Path) -> None:
    """A minimal recipe gets the documented defaults: 45 s, 24 fps, neutral, seed 0."""
    recipe = parse_recipe(_minimal(), tmp_path)
    assert recipe.output.n_frames == 1080
    assert recipe.motion.expression == "neutral" and recipe.motion.seed == 0
    assert recipe.speech.voice == "en-us"


def test_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    """An unknown key is an error that names its dotted path."""
    with pytest.raises(RecipeError) as info:
        parse_recipe(_minimal(speech={"text": "Hi", "volume": 3}), tmp_path)
    assert info.value.field == "speech.volume" and "unknown key" in str(info.value)


def test_unknown_preset_lists_the_valid_ones(tmp_path: Path) -> None:
    """An unknown expression preset names the field and lists every valid preset."""
    with pytest.raises(RecipeError) as info:
        parse_recipe(_minimal(motion={"expression": "furious"}), tmp_path)
    message = str(info.value)
    assert info.value.field == "motion.expression"
    for name in ("neutral", "excited", "manic", "calm"):
        assert name in message


def test_empty_text_is_refused(tmp_path: Path) -> None:
    """Whitespace-only speech text is an error on the speech field."""
    with pytest.raises(RecipeError) as info:
        parse_recipe(_minimal(speech={"text": "   "}), tmp_path)
    assert info.value.field.startswith("speech") and "empty" in str(info.value)


@pytest.mark.parametrize("output, field", [({"duration_s": 0}, "output.duration_s"),
                                           ({"fps": 500}, "output.fps")])
def test_out_of_range_values_name_the_field(tmp_path: Path, output: dict, field: str) -> None:
    """Out-of-range output values are refused with the field's dotted path."""
    with pytest.raises(RecipeError) as info:
        parse_recipe(_minimal(output=output), tmp_path)
    assert info.value.field == field


def test_segment_list_must_increase_and_fit_the_slot(tmp_path: Path) -> None:
    """Timed preset segments must start in increasing order inside the slot."""
    segments = [{"preset": "calm", "start_s": 0}, {"preset": "manic", "start_s": 50}]
    with pytest.raises(RecipeError, match="not inside"):
        parse_recipe(_minimal(motion={"expression": segments}), tmp_path)
    backwards = [{"preset": "calm", "start_s": 10}, {"preset": "manic", "start_s": 5}]
    with pytest.raises(RecipeError, match="increasing"):
        parse_recipe(_minimal(motion={"expression": backwards}), tmp_path)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path: Path) -> None:
    """actor.image given relative to the recipe file resolves beside it."""
    (tmp_path / "face.jpg").write_bytes(b"x")
    recipe_file = tmp_path / "r.json"
    recipe_file.write_text(json.dumps(_minimal(actor={"image": "face.jpg"})))
    assert load_recipe(recipe_file).actor.image == (tmp_path / "face.jpg").resolve()


def test_path_outside_allowed_roots_is_refused(tmp_path: Path) -> None:
    """A path escaping the recipe folder and the configured roots is refused, naming the field."""
    inside = tmp_path / "recipes"
    inside.mkdir()
    with pytest.raises(RecipeError) as info:
        parse_recipe(_minimal(actor={"image": "../secret.jpg"}), inside)
    assert info.value.field == "actor.image" and "outside the allowed roots" in str(info.value)
    allowed = parse_recipe(_minimal(actor={"image": "../secret.jpg"}), inside, allowed_roots=[tmp_path])
    assert allowed.actor.image == (tmp_path / "secret.jpg").resolve()


def test_broken_toml_is_a_recipe_error(tmp_path: Path) -> None:
    """A syntactically broken TOML file is reported as such, not as a traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text("slot_id = \n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)


def test_content_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    """The recipe hash is the same for equal recipes and differs when anything changes."""
    a = parse_recipe(_minimal(), tmp_path)
    b = parse_recipe(_minimal(), tmp_path)
    c = parse_recipe(_minimal(motion={"seed": 1}), tmp_path)
    assert a.content_hash() == b.content_hash() != c.content_hash()
