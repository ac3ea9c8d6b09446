"""Inputs snapshotted at submit: what renders is exactly what was accepted, and a refusal leaves nothing.

A recipe names its image, audio and driving clip by path (and a prompt may pick a picture from the
actor library), and a path can change after the answer (the file rewritten, or replaced by a
symlink to a file outside the allowed roots). So at submit each input file is opened once (never
through a symlink), its real location checked against the roots (the library folder for a pick),
its bytes read and hashed, written into a private staging folder of the spool, and checked there
the way the stage will use it (an image with a human face, a wav with samples, a driving video or
template whose headers are sane and whose frames show a face). Only when every input has passed
are the files moved to their content-addressed names, spool/<sha256><suffix>; a refusal removes
the staging folder, so a refused submit leaves nothing behind whatever it was refused for.

The recipe that is journaled and rendered names the spool copies; `inputs`, the record of
field → {path (as the user gave it, or the library file), sha256, bytes}, goes with the slot to
its manifest, so nothing is hashed twice.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.durable import fsync_path
from stages.errors import StageInputError
from stages.files import DEFAULT_MAX_BYTES, read_inside
from vortexd.recipe import Recipe

MAX_INPUT_BYTES = DEFAULT_MAX_BYTES
"""Largest input file accepted (a 45 s 24 kHz float wav is 4.3 MB; a large photo tens of MB)."""
STAGING_PREFIX = ".incoming-"
"""Name prefix of the spool's staging folders, one per submit being checked (a folder directly in
the spool, so that a refusal, which removes it, leaves the spool exactly as it was)."""
_PROCESS_TAG = secrets.token_hex(6)
# Staging folders carry the tag of the process that made them: a sweep removes those of a process
# that died mid-submit, never those of a submit still being checked in this one.

InputsRecord = dict[str, dict[str, Any]]
"""field → {"path": str, "sha256": str, "bytes": int} for each input file of a recipe."""


@dataclass(frozen=True)
class _Staged:
    field: str
    shown: str  # the file as the user gave it (or the library picture), for the record and refusals
    temp: Path
    final: Path
    sha256: str
    size: int


def _check(field: str, path: Path) -> None:
    """Check a staged file the way its stage will use it."""
    if field in ("actor.image", "actor.prompt"):
        from stages.image import load_actor

        load_actor(image=path)  # decodable, one human face the warp can use (and now cached)
    elif field == "speech.audio":
        from stages.tts.wav import load_wav

        load_wav(path)
    else:
        from stages.motion.driving import load_driving

        load_driving(path)  # headers first, then a face in most frames (kept, by content, for prepare)


def _as_given(exc: StageInputError, item: _Staged) -> StageInputError:
    """`exc` naming the field the user wrote and the file as they gave it, not the staging copy."""
    def fix(value: Any) -> Any:
        return value.replace(str(item.temp), item.shown) if isinstance(value, str) else value

    message = fix(exc.message)  # the staged copy has the user's file name: a bare name reads right
    try:
        return type(exc)(item.field, message, **{key: fix(value) for key, value in exc.details.items()})
    except TypeError:  # a subclass with its own constructor
        return StageInputError(item.field, message, **{key: fix(value) for key, value in exc.details.items()})


class StagedInputs:
    """A recipe's input files read, hashed and checked in a private staging folder of the spool.

    `commit()` moves them to their content-addressed names and returns (recipe, inputs); `discard()`
    removes them. The slow part (checking) is done by `stage_inputs`, so a caller can stage without
    holding the lock its spool sweeps take, and commit under it."""

    def __init__(self, recipe: Recipe, items: list[_Staged], folder: Path) -> None:
        self._recipe, self._items, self._folder = recipe, items, folder

    def commit(self) -> tuple[Recipe, InputsRecord]:
        """Move the staged files into the spool (atomically, each under its sha256) and return the
        recipe naming them and the inputs record."""
        for item in self._items:
            os.replace(item.temp, item.final)
        if self._items:
            fsync_path(self._items[0].final.parent)
        self.discard()
        return self._recipe, {item.field if item.field != "actor.prompt" else "actor.image":
                              {"path": item.shown, "sha256": item.sha256, "bytes": item.size}
                              for item in self._items}

    def discard(self) -> None:
        """Remove whatever is still staged (every refusal path ends here)."""
        shutil.rmtree(self._folder, ignore_errors=True)


def _stage_file(data: bytes, field: str, shown: str, name: str, folder: Path, spool_dir: Path) -> _Staged:
    """Write `data` into the staging folder (under the user's file name, so a check's messages read
    naturally) and say where it will go."""
    digest = hashlib.sha256(data).hexdigest()
    temp = folder / field / Path(name).name
    temp.parent.mkdir(parents=True, exist_ok=True)
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return _Staged(field, shown, temp, spool_dir / f"{digest}{Path(name).suffix.lower()}", digest, len(data))


def _read_inputs(recipe: Recipe, roots: list[Path], library_dir: Path | None) -> list[tuple[str, str, bytes]]:
    """(field, path as shown, bytes) of every input file, read safely; a prompt's library pick
    counts when there is no image and a library is given."""
    found = []
    for field, path in recipe.input_files().items():
        found.append((field, str(path), read_inside(path, roots, field, MAX_INPUT_BYTES)))
    if recipe.actor.image is None and recipe.actor.prompt is not None and library_dir is not None:
        from stages.image.library import pick_library_image

        picked, data = pick_library_image(recipe.actor.prompt, Path(library_dir))
        found.append(("actor.prompt", str(picked), data))
    return found


def stage_inputs(recipe: Recipe, roots: list[Path], spool_dir: Path, *,
                 library_dir: Path | None = None) -> StagedInputs:
    """Read, stage and check every input file of `recipe` (see the module docstring). Raises
    StageInputError naming the field and the file as given, after removing everything it staged."""
    folder = spool_dir / f"{STAGING_PREFIX}{_PROCESS_TAG}-{secrets.token_hex(6)}"
    staged = StagedInputs(recipe, [], folder)
    try:
        items = []
        for field, shown, data in _read_inputs(recipe, roots, library_dir):
            items.append(_stage_file(data, field, shown, shown, folder, spool_dir))
        for item in items:
            try:
                _check(item.field, item.temp)
            except StageInputError as exc:
                raise _as_given(exc, item) from None
    except BaseException:
        staged.discard()
        raise
    return StagedInputs(_naming_copies(recipe, items), items, folder)


def _naming_copies(recipe: Recipe, items: list[_Staged]) -> Recipe:
    """`recipe` with each input (a library pick as actor.image) naming its spool copy."""
    finals = {("actor.image" if item.field == "actor.prompt" else item.field): item.final for item in items}
    actor, speech, motion = recipe.actor, recipe.speech, recipe.motion
    if "actor.image" in finals:
        actor = actor.model_copy(update={"image": finals["actor.image"]})
    if "speech.audio" in finals:
        speech = speech.model_copy(update={"audio": finals["speech.audio"]})
    if "motion.driving" in finals:
        motion = motion.model_copy(update={"driving": finals["motion.driving"]})
    return recipe.model_copy(update={"actor": actor, "speech": speech, "motion": motion})


def snapshot_inputs(recipe: Recipe, roots: list[Path], spool_dir: Path, *,
                    library_dir: Path | None = None) -> tuple[Recipe, InputsRecord]:
    """The recipe with its input files checked and copied into the spool, and the inputs record
    (field → {path, sha256, bytes}; a library pick is listed as actor.image, its path the library
    file). Give `library_dir` when prompts are served from the actor library: the pick is then made
    here, once, and rendered from its copy. Raises StageInputError naming the field for a file that
    is unusable or unsafe, leaving nothing in the spool."""
    return stage_inputs(recipe, roots, spool_dir, library_dir=library_dir).commit()


def input_files(recipe: Recipe) -> set[Path]:
    """The input files a recipe names (for a journaled recipe: its spool copies)."""
    return set(recipe.input_files().values())


def spooled_inputs(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """The inputs record of a journaled recipe read off its spool copies (each named by its
    sha256), for a slot whose record was not journaled; the paths are the copies'."""
    return {field: {"path": str(path), "sha256": path.stem, "bytes": path.stat().st_size}
            for field, path in recipe.input_files().items() if path.is_file()}


def sweep_spool(spool_dir: Path, keep: set[Path]) -> int:
    """Remove spool files no unfinished slot names, and staging folders a previous process left
    mid-submit (a submit of this process still being checked keeps its own); returns how many
    spool files were removed."""
    if not spool_dir.is_dir():
        return 0
    removed = 0
    for path in spool_dir.iterdir():
        if path.is_file() and path not in keep:
            path.unlink(missing_ok=True)
            removed += 1
        elif path.name.startswith(STAGING_PREFIX) and not path.name.startswith(f"{STAGING_PREFIX}{_PROCESS_TAG}-"):
            shutil.rmtree(path, ignore_errors=True)
    return removed
