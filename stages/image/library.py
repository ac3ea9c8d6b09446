"""The embedded image backend: an actor from a file, from a library folder by prompt, or built in.

No image is generated here: the recipe's picture, a picture picked from a configured folder, or
scikit-image's astronaut portrait is decoded, checked for a human face, and cropped to the
standard actor frame. Prepared actors are cached by the sha256 of their source, because the
daemon asks for the same actor slot after slot.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from stages.errors import StageInputError
from stages.files import read_inside
from stages.image.crop import crop_face
from stages.image.load import MAX_FILE_BYTES, decode_image, read_image_bytes
from stages.types import Actor

BUILTIN_SOURCE = "builtin:astronaut"
"""`Actor.source` of the built-in sample portrait (scikit-image's `astronaut`, public domain)."""

LIBRARY_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
"""File name endings (case-insensitive) that count as pictures in a library folder."""

ACTOR_CACHE_ENTRIES = 4
"""Prepared actors kept in memory (≈ 0.8 MB each); a slot uses one, the next slot maybe another."""

_cache: OrderedDict[str, Actor] = OrderedDict()
_cache_lock = threading.Lock()


def clear_actor_cache() -> None:
    """Forget every prepared actor (the next load_actor prepares from scratch)."""
    with _cache_lock:
        _cache.clear()


def _cached(sha256: str) -> Actor | None:
    with _cache_lock:
        actor = _cache.get(sha256)
        if actor is not None:
            _cache.move_to_end(sha256)
        return actor


def _remember(actor: Actor) -> Actor:
    """Store `actor`, or return the one already stored for its source (another thread won the race)."""
    with _cache_lock:
        existing = _cache.get(actor.source_sha256)
        if existing is not None:
            _cache.move_to_end(actor.source_sha256)
            return existing
        _cache[actor.source_sha256] = actor
        while len(_cache) > ACTOR_CACHE_ENTRIES:
            _cache.popitem(last=False)
        return actor


def builtin_portrait_path() -> Path:
    """The built-in sample portrait's file: scikit-image's astronaut.png, found without importing
    scikit-image (its `data.astronaut()` imports skimage.io and imageio's plugins, ~0.3 s of CPU
    per process, to decode this one PNG)."""
    spec = importlib.util.find_spec("skimage")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "data" / "astronaut.png"
        if path.is_file():
            return path
    raise FileNotFoundError("scikit-image's sample portrait data/astronaut.png is not installed")


@functools.lru_cache(maxsize=1)
def _builtin_portrait() -> tuple[np.ndarray, str]:
    # Pillow, as skimage.data.astronaut() reads it (the same pixels); OpenCV's libpng would print
    # a warning about the file's colour profile on every start.
    with Image.open(builtin_portrait_path()) as picture:
        pixels = np.ascontiguousarray(picture.convert("RGB"), dtype=np.uint8)
    pixels.setflags(write=False)
    return pixels, hashlib.sha256(pixels.tobytes()).hexdigest()


def library_images(library_dir: Path) -> list[Path]:
    """The picture entries directly inside `library_dir`, sorted by name (the order choices index).

    Symbolic links are listed like files (so adding one never shifts which picture a prompt
    picks) but are refused when picked (read_library_image): a link could lead anywhere."""
    library_dir = Path(library_dir)
    if not library_dir.is_dir():
        raise StageInputError("actor.prompt", "the actor library folder does not exist", library_dir=str(library_dir))
    files = [p for p in library_dir.iterdir()
             if (p.is_symlink() or p.is_file()) and p.suffix.lower() in LIBRARY_SUFFIXES]
    return sorted(files, key=lambda p: p.name)


def read_library_image(path: Path, library_dir: Path) -> bytes:
    """The bytes of the library picture `path`, read once and never through a symlink, from a file
    that really lies in `library_dir` (a folder swapped for a link elsewhere is refused too).
    Refusals name actor.prompt and the picture's name, never where a link leads."""
    return read_inside(Path(path), [Path(library_dir)], "actor.prompt", MAX_FILE_BYTES,
                       shown=f"library picture {Path(path).name}")


def pick_library_image(prompt: str, library_dir: Path) -> tuple[Path, bytes]:
    """The library picture a prompt picks (choose_library_image) and its bytes (read_library_image):
    what the daemon snapshots at submit, and what load_actor prepares."""
    if not prompt.strip():
        raise StageInputError("actor.prompt", "the prompt is empty")
    path = choose_library_image(prompt, Path(library_dir))
    return path, read_library_image(path, Path(library_dir))


def choose_library_image(prompt: str, library_dir: Path) -> Path:
    """The library picture for `prompt`: one whose name is a word of the prompt, else a stable hash pick.

    A file stem matches when it appears in the prompt as a whole word, case-insensitively
    ("s1" does not match "s10"); when several do, the one mentioned first wins. With no
    match, sha256 of the prompt indexes the sorted file list, so a prompt always picks the
    same picture while different prompts spread over the library.
    """
    files = library_images(library_dir)
    if not files:
        raise StageInputError("actor.prompt", "the actor library folder holds no pictures", library_dir=str(library_dir))
    mentions = []
    for path in files:
        found = re.search(rf"(?<!\w){re.escape(path.stem)}(?!\w)", prompt, flags=re.IGNORECASE)
        if found:
            mentions.append((found.start(), path.name, path))
    if mentions:
        return min(mentions)[2]
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return files[int.from_bytes(digest[:8], "big") % len(files)]


def _prepare(pixels: np.ndarray, source: str, sha256: str, field: str) -> Actor:
    crop = crop_face(pixels, field)
    # The actor is shared by every slot that uses it (and sits in the cache): make it immutable.
    for array in (crop.image, crop.landmarks_px, crop.crop_from_source):
        array.setflags(write=False)
    return Actor(
        image=crop.image,
        landmarks_px=crop.landmarks_px,
        crop_from_source=crop.crop_from_source,
        source=source,
        source_sha256=sha256,
    )


def actor_from_pixels(pixels: np.ndarray, source: str, field: str) -> Actor:
    """Prepare an actor from decoded RGB pixels (H×W×3 uint8), e.g. a generated portrait.

    `source` is recorded as Actor.source; Actor.source_sha256 is the sha256 of the pixel bytes,
    so identical pixels share one cached actor. Raises NoFaceError on `field` when the picture
    shows no human face.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    sha256 = hashlib.sha256(pixels.tobytes()).hexdigest()
    actor = _cached(sha256)
    if actor is not None:
        return actor
    return _remember(_prepare(pixels, source, sha256, field))


def _actor_from_bytes(data: bytes, source: str, field: str) -> Actor:
    sha256 = hashlib.sha256(data).hexdigest()
    actor = _cached(sha256)
    if actor is not None:
        return actor
    pixels = decode_image(data, field, source)
    return _remember(_prepare(pixels, source, sha256, field))


def load_actor(image: Path | None = None, prompt: str | None = None, library_dir: Path | None = None) -> Actor:
    """Prepare the actor for a recipe: a 512² face crop with its landmarks and crop transform.

    `image` (recipe field actor.image) wins when given. Otherwise, with a `prompt` and a
    configured `library_dir`, a picture is chosen from the folder (choose_library_image).
    Otherwise the built-in astronaut portrait is used. A library picture is read never through a
    symlink and only from inside the folder (read_library_image). The same source content returns
    the same (cached, read-only) Actor object. Raises StageInputError naming the recipe field for
    an unusable file, and NoFaceError when the picture shows no human face.
    """
    if image is not None:
        return _actor_from_bytes(read_image_bytes(Path(image), "actor.image"), str(image), "actor.image")
    if prompt is not None and not prompt.strip():
        raise StageInputError("actor.prompt", "the prompt is empty")
    if prompt is not None and library_dir is not None:
        path, data = pick_library_image(prompt, Path(library_dir))
        return _actor_from_bytes(data, str(path), "actor.prompt")
    pixels, sha256 = _builtin_portrait()
    actor = _cached(sha256)
    if actor is not None:
        return actor
    return _remember(_prepare(pixels, BUILTIN_SOURCE, sha256, "actor.image"))
