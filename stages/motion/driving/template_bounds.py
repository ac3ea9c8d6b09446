"""A motion template (.npz) checked from its headers before any array is loaded.

An .npz is a zip of .npy files, and both say what they hold before the data: the zip's central
directory lists every member with its uncompressed size, and each .npy begins with its dtype and
shape. A hostile file can be tiny and still inflate to gigabytes (zeros deflate ~1000:1), or claim
millions of frames; so the names, dtypes, shapes and sizes are all checked here first, and only a
file that passes is handed to numpy. Refusals name motion.driving and the file as the user gave it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from stages.errors import StageInputError
from stages.motion.driving.video import DRIVING_FIELD, MAX_DRIVING_S

PER_FRAME_SHAPES: dict[str, tuple[int, ...]] = {
    "scale": (1,), "R": (3, 3), "exp": (21, 3), "t": (3,), "eye_close_ratio": (2,), "lip_close_ratio": (1,)}
"""Each per-frame array of a LivePortrait template: its shape after the frame axis (T, …)."""
REQUIRED = ("scale", "R", "exp", "t", "fps")
MAX_TEMPLATE_FPS = 120.0
"""Templates are extracted from videos; no camera clip a face is driven from runs faster."""
MAX_TEMPLATE_FRAMES = int(MAX_DRIVING_S * 60)
"""A template as long as the longest driving video at 60 fps (7,200 frames, ≈ 2.3 MB as float32)."""
MAX_TEMPLATE_BYTES = 32 * 2**20
"""Uncompressed bytes of all members together: the largest valid template in float64 is ≈ 4.6 MB."""
_HEADER_BYTES_MAX = 10_000  # numpy's own default limit on an .npy header


def _refuse(shown: str, reason: str, **details: object) -> StageInputError:
    return StageInputError(DRIVING_FIELD, f"{shown}: {reason}", **details)


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a member's .npy header (only the header is inflated)."""
    name = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = reader(member, max_header_size=_HEADER_BYTES_MAX)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _refuse(shown, f"'{name}' is not a readable .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise _refuse(shown, f"'{name}' holds {'object' if dtype.hasobject else dtype.str} values; "
                      f"a template holds plain numbers", dtype=str(dtype))
    return tuple(int(n) for n in shape), dtype


def _check_member(name: str, shape: tuple[int, ...], shown: str) -> int | None:
    """The frame count a per-frame array declares (None for fps), refusing a wrong shape."""
    if name == "fps":
        if int(np.prod(shape, dtype=np.int64)) != 1:
            raise _refuse(shown, "'fps' should be one number", shape=shape)
        return None
    want = PER_FRAME_SHAPES[name]
    if len(shape) != 1 + len(want) or shape[1:] != want:
        raise _refuse(shown, f"'{name}' should be T×{'×'.join(map(str, want))}", shape=shape)
    if shape[0] > MAX_TEMPLATE_FRAMES:
        raise _refuse(shown, f"'{name}' has {shape[0]} frames; a template holds at most {MAX_TEMPLATE_FRAMES}",
                      frames=shape[0], max_frames=MAX_TEMPLATE_FRAMES)
    return shape[0]


def _members(archive: zipfile.ZipFile, shown: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name, refusing unknown names, duplicates and oversize data."""
    allowed = {*PER_FRAME_SHAPES, "fps"}
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name not in allowed or not info.filename.endswith(".npy") or name in members:
            raise _refuse(shown, f"unexpected array '{name}' in the template; it may hold only "
                          f"{', '.join(sorted(allowed))}", array=info.filename)
        members[name] = info
    total = sum(info.file_size for info in members.values())
    if total > MAX_TEMPLATE_BYTES:
        raise _refuse(shown, f"the template's arrays hold {total / 2**20:.0f} MiB; at most "
                      f"{MAX_TEMPLATE_BYTES // 2**20} MiB", bytes=total)
    missing = [name for name in REQUIRED if name not in members]
    if missing:
        raise _refuse(shown, f"the template has no '{missing[0]}' array", missing=missing)
    return members


def _fps(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shown: str) -> float:
    with archive.open(info) as member:
        value = float(np.lib.format.read_array(member, allow_pickle=False).reshape(-1)[0])
    if not np.isfinite(value) or not 0 < value <= MAX_TEMPLATE_FPS:
        raise _refuse(shown, f"fps {value} is not in (0, {MAX_TEMPLATE_FPS:.0f}]", fps=value)
    return value


def check_template_file(path: str | Path, shown: str | None = None) -> None:
    """Refuse a template .npz whose headers say it is unsafe or unusable to load: members other than
    the template's arrays, non-numeric or object dtypes, wrong shapes, more than
    MAX_TEMPLATE_FRAMES frames or MAX_DRIVING_S seconds, sizes that disagree with the shapes, or
    more than MAX_TEMPLATE_BYTES uncompressed. Reads only headers (and the one-number fps)."""
    path = Path(path)
    shown = path.name if shown is None else shown
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(shown, f"not a readable .npz ({exc})") from None
    with archive:
        members = _members(archive, shown)
        frames = set()
        for name, info in members.items():
            shape, dtype = _npy_header(archive, info, shown)
            count = _check_member(name, shape, shown)
            if count is not None:
                frames.add(count)
            # The member must hold at least what its header declares, or numpy would fail mid-read.
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > info.file_size:
                raise _refuse(shown, f"'{name}' is shorter than its shape says", shape=shape)
        if len(frames) != 1:
            raise _refuse(shown, f"the template's arrays disagree on the number of frames ({sorted(frames)})")
        n_frames = frames.pop()
        fps = _fps(archive, members["fps"], shown)
    if n_frames / fps > MAX_DRIVING_S:
        raise _refuse(shown, f"{n_frames} frames at {fps:g} fps last {n_frames / fps:.0f} s; longer than "
                      f"{MAX_DRIVING_S:.0f} s", frames=n_frames, max_s=MAX_DRIVING_S)
