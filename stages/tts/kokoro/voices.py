"""Kokoro voice packs: one (rows, 256) float32 style table per voice.

A voice pack holds one 256-d style vector per input length: Kokoro conditions on the row whose
index is the number of phoneme tokens in the call. Packs come as an .npz archive of several
voices (the PyPI voices_ja.npz, kokoro-onnx's voices-v1.0.bin), one .npy per voice, or one raw
little-endian float32 .bin per voice (the layout of the onnx-community exports).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.tts.kokoro.assets import KokoroModelError

STYLE_DIM = 256


@dataclass(frozen=True)
class VoicePacks:
    """Styles by voice name (e.g. "jf_alpha"), each (rows, STYLE_DIM) float32."""

    styles: dict[str, np.ndarray]
    sources: dict[str, Path]

    def names(self) -> list[str]:
        """Voice names, sorted."""
        return sorted(self.styles)

    def style_for(self, voice: str, n_tokens: int) -> np.ndarray:
        """(1, STYLE_DIM) style row for a call with `n_tokens` phoneme tokens (pads excluded)."""
        table = self.styles[voice]
        # Packs have one row per possible length; a longer call uses the last row.
        return table[min(n_tokens, len(table) - 1)].reshape(1, STYLE_DIM)


def _as_table(array: np.ndarray, origin: Path, name: str) -> np.ndarray:
    values = np.asarray(array)
    if values.size == 0 or values.size % STYLE_DIM or values.dtype.kind != "f":
        raise KokoroModelError(f"voice {name!r} in {origin} is not a float (rows, {STYLE_DIM}) style table "
                               f"(shape {values.shape}, dtype {values.dtype})", origin)
    table = values.astype(np.float32).reshape(-1, STYLE_DIM)
    if not np.all(np.isfinite(table)):
        raise KokoroModelError(f"voice {name!r} in {origin} contains NaN or infinite values", origin)
    return table


def _read(path: Path) -> dict[str, np.ndarray]:
    if zipfile.is_zipfile(path):  # .npz, whatever its extension says
        with np.load(path, allow_pickle=False) as archive:
            return {name: _as_table(archive[name], path, name) for name in archive.files}
    if path.suffix == ".npy":
        return {path.stem: _as_table(np.load(path, allow_pickle=False), path, path.stem)}
    if path.suffix == ".bin":
        return {path.stem: _as_table(np.fromfile(path, dtype="<f4"), path, path.stem)}
    raise KokoroModelError(f"unsupported voice file {path} (expected .npz, .npy or raw float32 .bin)", path)


def load_voice_packs(paths: Iterable[Path]) -> VoicePacks:
    """Read every voice in `paths`; a voice defined twice keeps the later file's table."""
    styles: dict[str, np.ndarray] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        try:
            found = _read(path)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise KokoroModelError(f"cannot read Kokoro voices from {path}: {exc}", path) from exc
        for name, table in found.items():
            styles[name], sources[name] = table, path
    if not styles:
        raise KokoroModelError("no Kokoro voices found")
    return VoicePacks(styles, sources)


def find_voice_files(folder: Path) -> list[Path]:
    """Voice files in an operator's Kokoro folder: *.npz, voices*.bin, and voices/*.{npy,bin}."""
    found = sorted(folder.glob("*.npz")) + sorted(folder.glob("voices*.bin"))
    sub = folder / "voices"
    if sub.is_dir():
        found += sorted(sub.glob("*.npy")) + sorted(sub.glob("*.bin")) + sorted(sub.glob("*.npz"))
    return found
