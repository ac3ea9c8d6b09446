"""Inputs snapshotted at submit: what renders is exactly what was accepted.

A recipe names its image, audio and driving clip by path, and a path can change after the answer (the file
rewritten, or replaced by a symlink to a file outside the allowed roots). So at submit each input
file is opened once (never through a symlink), its real location checked against the roots, its
bytes read, checked the way the stage will use them (an image with a human face, a wav with
samples, a driving video with a face in most frames or a template of the right shape), and
copied into the daemon's spool under its sha256. The recipe that is journaled and
rendered names the spool copy; the manifest records the hashes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from stages.durable import fsync_path
from stages.errors import StageInputError
from vortexd.recipe import Recipe

MAX_INPUT_BYTES = 200 * 2**20
"""Largest input file accepted (a 45 s 24 kHz float wav is 4.3 MB; a large photo tens of MB)."""


def _read_inside(path: Path, roots: list[Path], field: str) -> bytes:
    """The bytes of `path`, opened without following a final symlink and checked to really lie
    inside `roots` (the open file's own path is checked, so a swap after the check cannot win)."""
    try:
        # O_NONBLOCK: a FIFO planted in the roots must not hang the open (regular files ignore it).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        reason = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
        raise StageInputError(field, f"the file {reason}", path=str(path)) from None
    with os.fdopen(fd, "rb") as handle:
        real = Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))
        if not any(real.is_relative_to(root.resolve()) for root in roots):
            raise StageInputError(field, "the file is outside the allowed roots", path=str(path))
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise StageInputError(field, "the path is not a regular file", path=str(path))
        data = handle.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise StageInputError(field, f"the file is larger than {MAX_INPUT_BYTES // 2**20} MiB", path=str(path))
    return data


def _store(data: bytes, suffix: str, spool_dir: Path) -> tuple[Path, str]:
    """Write `data` to spool_dir/<sha256><suffix> (atomically, once); return (path, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    target = spool_dir / f"{digest}{suffix.lower()}"
    if not target.exists():
        spool_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".spool-", dir=spool_dir)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_path(spool_dir)
    return target, digest


def _check_image(path: Path) -> None:
    """Decodable, with one human face the warp can use (what the image stage will require)."""
    from stages.image import load_actor

    load_actor(image=path)


def _check_audio(path: Path) -> None:
    """A wav with samples (what the speech stage will require)."""
    from stages.tts.wav import load_wav

    load_wav(path)


def _check_driving(path: Path) -> None:
    """A driving video with a face in most frames, or a template of the right shape (what the
    planner will require); the motion read here is kept for the prepare stage."""
    from vortexd.pipeline import load_driving_motion

    load_driving_motion(path)


def snapshot_inputs(recipe: Recipe, roots: list[Path], spool_dir: Path) -> tuple[Recipe, dict[str, str]]:
    """The recipe with its input files copied into the spool and checked, and their sha256 by
    field. Raises StageInputError naming the field for a file that is unusable or unsafe."""
    hashes: dict[str, str] = {}
    actor, speech = recipe.actor, recipe.speech
    if actor.image is not None:
        stored, hashes["actor.image"] = _store(_read_inside(actor.image, roots, "actor.image"),
                                               actor.image.suffix, spool_dir)
        _check_image(stored)
        actor = actor.model_copy(update={"image": stored})
    if speech.audio is not None:
        stored, hashes["speech.audio"] = _store(_read_inside(speech.audio, roots, "speech.audio"),
                                                speech.audio.suffix, spool_dir)
        _check_audio(stored)
        speech = speech.model_copy(update={"audio": stored})
    motion = recipe.motion
    if motion.driving is not None:
        stored, hashes["motion.driving"] = _store(_read_inside(motion.driving, roots, "motion.driving"),
                                                  motion.driving.suffix, spool_dir)
        _check_driving(stored)
        motion = motion.model_copy(update={"driving": stored})
    return recipe.model_copy(update={"actor": actor, "speech": speech, "motion": motion}), hashes


def input_files(recipe: Recipe) -> set[Path]:
    """The input files a recipe names (for a journaled recipe: its spool copies)."""
    return {Path(p) for p in (recipe.actor.image, recipe.speech.audio, recipe.motion.driving) if p is not None}


def sweep_spool(spool_dir: Path, keep: set[Path]) -> int:
    """Remove spool files no unfinished slot names (run at start-up, before any submit can
    store a file); returns how many were removed."""
    if not spool_dir.is_dir():
        return 0
    removed = 0
    for path in spool_dir.iterdir():
        if path.is_file() and path not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
