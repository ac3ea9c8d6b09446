"""load_actor: real portraits become consistently framed actors; bad sources fail clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.errors import NoFaceError, StageInputError
from stages.image import load_actor, read_image
from stages.image.crop import EYE_MIDPOINT_PX, INTEROCULAR_PX, eye_geometry
from stages.image.face import detect_landmarks
from stages.image.library import (BUILTIN_SOURCE, choose_library_image, clear_actor_cache, library_images,
                                  read_library_image)

FACES_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "faces"
HUMAN_FACES = ("s5.jpg", "s9.jpg", "s10.jpg", "s12.jpg")
DOG = "s25.jpg"

needs_faces = pytest.mark.skipif(not FACES_DIR.is_dir(), reason=f"shared portraits not found at {FACES_DIR}")


@pytest.fixture(scope="module")
def actors():
    """Every human portrait (and the builtin) prepared once for the module."""
    if not FACES_DIR.is_dir():
        pytest.skip(f"shared portraits not found at {FACES_DIR}")
    clear_actor_cache()
    prepared = {name: load_actor(FACES_DIR / name) for name in HUMAN_FACES}
    prepared["builtin"] = load_actor()
    return prepared


@needs_faces
@pytest.mark.parametrize("name", [*HUMAN_FACES, "builtin"])
def test_every_face_is_framed_the_same_way(actors, name):
    """The crop is 512² RGB with the eyes level (<2°), centred on (256, 215) (±3 px), 92 px apart (±5 %)."""
    actor = actors[name]
    assert actor.image.shape == (512, 512, 3) and actor.image.dtype == np.uint8
    assert actor.landmarks_px.shape == (478, 3) and actor.landmarks_px.dtype == np.float32
    assert actor.crop_from_source.shape == (2, 3) and actor.crop_from_source.dtype == np.float64
    eyes = eye_geometry(actor.landmarks_px)
    assert np.hypot(eyes.midpoint_px[0] - EYE_MIDPOINT_PX[0], eyes.midpoint_px[1] - EYE_MIDPOINT_PX[1]) < 3.0
    assert abs(eyes.roll_deg) < 2.0
    assert abs(eyes.interocular_px / INTEROCULAR_PX - 1.0) < 0.05


@needs_faces
def test_the_landmarks_are_those_of_the_crop(actors):
    """Re-detecting the face on the actor's image gives its landmarks back (to within a pixel)."""
    actor = actors["s5.jpg"]
    again = detect_landmarks(np.array(actor.image))
    assert np.median(np.linalg.norm(again[:, :2] - actor.landmarks_px[:, :2], axis=1)) < 1.0


@needs_faces
def test_crop_from_source_maps_the_source_face_onto_the_crop(actors):
    """The stored affine takes the source picture's eye midpoint to the crop's fixed point (±3 px)."""
    actor = actors["s12.jpg"]
    source_eyes = eye_geometry(detect_landmarks(read_image(FACES_DIR / "s12.jpg")))
    mapped = actor.crop_from_source[:, :2] @ np.array(source_eyes.midpoint_px) + actor.crop_from_source[:, 2]
    assert np.linalg.norm(mapped - EYE_MIDPOINT_PX) < 3.0


@needs_faces
def test_actor_records_where_it_came_from(actors):
    """source names the file (or the builtin) and source_sha256 is the hash of its content."""
    import hashlib

    assert actors["s9.jpg"].source == str(FACES_DIR / "s9.jpg")
    assert actors["s9.jpg"].source_sha256 == hashlib.sha256((FACES_DIR / "s9.jpg").read_bytes()).hexdigest()
    assert actors["builtin"].source == BUILTIN_SOURCE
    assert len(actors["builtin"].source_sha256) == 64


@needs_faces
def test_a_dog_is_refused_as_no_human_face():
    """The dog portrait raises NoFaceError for actor.image saying there is no human face."""
    with pytest.raises(NoFaceError, match="no human face") as caught:
        load_actor(FACES_DIR / DOG)
    assert caught.value.field == "actor.image"


def test_unusable_files_are_refused_naming_actor_image(tmp_path):
    """A text file named .jpg, a missing path and a 10×10 picture each raise StageInputError(actor.image)."""
    text = tmp_path / "portrait.jpg"
    text.write_text("definitely not a JPEG\n" * 10)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.full((10, 10, 3), 200, np.uint8))
    for path in (text, tmp_path / "missing.jpg", tiny):
        with pytest.raises(StageInputError) as caught:
            load_actor(path)
        assert caught.value.field == "actor.image", path


def test_a_faceless_picture_is_refused(tmp_path):
    """A picture with no face at all (a smooth gradient) raises NoFaceError rather than a bogus crop."""
    gradient = np.repeat(np.linspace(0, 255, 300, dtype=np.float32)[None, :, None], 300, axis=0)
    path = tmp_path / "wall.png"
    cv2.imwrite(str(path), np.repeat(gradient, 3, axis=2).astype(np.uint8))
    with pytest.raises(NoFaceError) as caught:
        load_actor(path)
    assert caught.value.field == "actor.image"


@needs_faces
def test_same_content_gives_the_same_cached_actor(tmp_path, actors):
    """The same bytes under another name return the very same Actor object, whose arrays are read-only."""
    copy = tmp_path / "copy_of_s5.jpg"
    shutil.copyfile(FACES_DIR / "s5.jpg", copy)
    first = load_actor(FACES_DIR / "s5.jpg")
    assert load_actor(copy) is first
    with pytest.raises(ValueError):
        first.image[0, 0, 0] = 1
    with pytest.raises(ValueError):
        first.landmarks_px[0, 0] = 1.0


def test_builtin_is_prepared_once():
    """The builtin astronaut is prepared once; clearing the cache prepares an equal, new object."""
    first = load_actor()
    assert load_actor() is first and first.source == BUILTIN_SOURCE
    clear_actor_cache()
    second = load_actor()
    assert second is not first
    np.testing.assert_array_equal(second.image, first.image)


def test_cache_forgets_the_least_recently_used_actor():
    """With the cache full, adding an actor drops the one used longest ago, not one just used."""
    from stages.image.library import ACTOR_CACHE_ENTRIES, _cached, _remember
    from stages.types import Actor

    clear_actor_cache()
    made = []
    for i in range(ACTOR_CACHE_ENTRIES):
        made.append(_remember(Actor(np.full((2, 2, 3), i, np.uint8), np.zeros((478, 3), np.float32),
                                    np.eye(2, 3), f"test:{i}", f"{i:064x}")))
    assert _cached(made[0].source_sha256) is made[0]  # touch the oldest: now the newest
    newcomer = Actor(np.zeros((2, 2, 3), np.uint8), np.zeros((478, 3), np.float32), np.eye(2, 3), "test:new", "f" * 64)
    assert _remember(newcomer) is newcomer
    assert _cached(made[0].source_sha256) is made[0]
    assert _cached(made[1].source_sha256) is None
    assert _remember(Actor(newcomer.image, newcomer.landmarks_px, newcomer.crop_from_source, "x", "f" * 64)) is newcomer
    clear_actor_cache()


def test_prompt_without_library_uses_the_builtin():
    """A prompt with no library folder configured falls back to the builtin portrait."""
    assert load_actor(prompt="a friendly news presenter").source == BUILTIN_SOURCE


def test_blank_prompt_is_refused(tmp_path):
    """An empty or whitespace prompt raises StageInputError naming actor.prompt."""
    with pytest.raises(StageInputError) as caught:
        load_actor(prompt="   ", library_dir=tmp_path)
    assert caught.value.field == "actor.prompt"


def _library(tmp_path: Path, stems: list[str]) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    for stem in stems:
        (folder / f"{stem}.jpg").write_bytes(b"picked by name, never decoded here")
    (folder / "notes.txt").write_text("not a picture")
    return folder


def test_prompt_naming_a_file_picks_it(tmp_path):
    """A file stem that is a whole word of the prompt (any case) is chosen; 's1' does not match 's10'."""
    folder = _library(tmp_path, ["s1", "s10", "einstein", "mona-lisa"])
    assert choose_library_image("Make EINSTEIN speak", folder).name == "einstein.jpg"
    assert choose_library_image("portrait s10 at dusk", folder).name == "s10.jpg"
    assert choose_library_image("the mona-lisa, then einstein", folder).name == "mona-lisa.jpg"


def test_prompt_without_a_name_picks_deterministically(tmp_path):
    """Without a named file, the same prompt picks the same picture and different prompts spread out."""
    folder = _library(tmp_path, [f"actor{i}" for i in range(6)])
    prompts = [f"a calm speaker number {i}" for i in range(30)]
    picks = [choose_library_image(p, folder) for p in prompts]
    assert picks == [choose_library_image(p, folder) for p in prompts]
    assert all(p.suffix == ".jpg" for p in picks)
    assert len(set(picks)) >= 4


def test_empty_or_missing_library_is_refused(tmp_path):
    """A library folder with no pictures, or none at all, raises StageInputError naming actor.prompt."""
    for folder in (_library(tmp_path, []), tmp_path / "nowhere"):
        with pytest.raises(StageInputError) as caught:
            choose_library_image("anyone", folder)
        assert caught.value.field == "actor.prompt"


@needs_faces
def test_load_actor_by_prompt_uses_the_library(tmp_path):
    """load_actor(prompt=…, library_dir=…) prepares the picture the prompt names."""
    folder = tmp_path / "library"
    folder.mkdir()
    for name in ("s12.jpg", "s5.jpg"):
        shutil.copyfile(FACES_DIR / name, folder / name)
    actor = load_actor(prompt="S12 reads the evening news", library_dir=folder)
    assert actor.source == str(folder / "s12.jpg")


@needs_faces
def test_a_library_symlink_is_refused_when_picked(tmp_path):
    """A symlink in the library to a face elsewhere is listed (picks do not shift) but refused when a
    prompt picks it, naming actor.prompt and the picture, never where the link leads."""
    folder, outside = tmp_path / "library", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    shutil.copyfile(FACES_DIR / "s5.jpg", folder / "anna.jpg")
    shutil.copyfile(FACES_DIR / "s12.jpg", outside / "secret.jpg")
    (folder / "evil.jpg").symlink_to(outside / "secret.jpg")
    assert [p.name for p in library_images(folder)] == ["anna.jpg", "evil.jpg"]
    with pytest.raises(StageInputError, match="symbolic link") as caught:
        load_actor(prompt="evil", library_dir=folder)
    assert caught.value.field == "actor.prompt" and "outside" not in str(caught.value)
    assert load_actor(prompt="anna", library_dir=folder).source == str(folder / "anna.jpg")


@needs_faces
def test_a_library_folder_reached_through_a_link_out_of_it_is_refused(tmp_path):
    """The picture's real place must be in the library: a subfolder link cannot smuggle one in."""
    folder, outside = tmp_path / "library", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    shutil.copyfile(FACES_DIR / "s12.jpg", outside / "secret.jpg")
    with pytest.raises(StageInputError, match="outside the allowed roots") as caught:
        read_library_image(folder / ".." / "outside" / "secret.jpg", folder)
    assert caught.value.field == "actor.prompt"


def test_builtin_is_scikit_images_astronaut_read_without_importing_skimage_io():
    """The built-in portrait has exactly skimage.data.astronaut()'s pixels (its source hash is
    theirs), and preparing it does not import skimage.io (~0.3 s of CPU per process)."""
    import hashlib
    import subprocess
    import sys

    from skimage import data

    assert load_actor().source_sha256 == hashlib.sha256(data.astronaut().tobytes()).hexdigest()
    code = ("import sys; from stages.image.library import _builtin_portrait; _builtin_portrait(); "
            "print('skimage.io' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "False"
