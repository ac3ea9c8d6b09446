"""Inputs at submit (issue P10, defects 2, 6, 7 and 8) on the real submit path, `snapshot_inputs`:
library picks snapshotted and hashed like any other input, hostile clips and templates refused
early and cheaply, refusals naming the user's file, and nothing left in the spool by a refusal."""

from __future__ import annotations

import hashlib
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from vortexd.recipe import parse_recipe
from vortexd.spool import snapshot_inputs


def _recipe(root: Path, **fields) -> object:
    data = {"slot_id": "s", "speech": {"text": "Hello."}}
    for key, value in fields.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return parse_recipe(data, None, [root])


def _spool_files(spool: Path) -> list[Path]:
    return sorted(spool.rglob("*")) if spool.exists() else []  # folders count: nothing may be left


@pytest.fixture
def library(tmp_path: Path, shared_dir: Path) -> Path:
    """An actor library with one real portrait, anna.jpg, and a symlink evil.jpg to a face outside."""
    actors, outside = tmp_path / "actors", tmp_path / "outside"
    actors.mkdir(), outside.mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", actors / "anna.jpg")
    shutil.copy(shared_dir / "faces" / "s10.jpg", outside / "secret.jpg")
    (actors / "evil.jpg").symlink_to(outside / "secret.jpg")
    return actors


def test_a_library_symlink_out_of_the_library_is_refused_at_submit(tmp_path: Path, library: Path) -> None:
    """`actor.prompt = "evil"` picks evil.jpg, a symlink to a face outside: refused naming the prompt,
    without revealing where the link leads, and nothing is spooled."""
    spool = tmp_path / "spool"
    with pytest.raises(StageInputError, match="symbolic link") as err:
        snapshot_inputs(_recipe(tmp_path / "inbox", actor__prompt="evil"), [tmp_path / "inbox"], spool,
                        library_dir=library)
    assert err.value.field == "actor.prompt"
    assert "outside" not in str(err.value) and "secret" not in str(err.value)
    assert _spool_files(spool) == []


def test_a_library_pick_is_snapshotted_hashed_and_listed(tmp_path: Path, library: Path) -> None:
    """The picked portrait is copied into the spool at submit: the recipe renders the copy, the inputs
    record lists it (library path, sha256, bytes), and swapping the library file afterwards for a
    symlink to the outside face changes nothing."""
    accepted = (library / "anna.jpg").read_bytes()
    digest = hashlib.sha256(accepted).hexdigest()
    recipe, inputs = snapshot_inputs(_recipe(tmp_path / "inbox", actor__prompt="anna smiling"),
                                     [tmp_path / "inbox"], tmp_path / "spool", library_dir=library)
    assert inputs == {"actor.image": {"path": str(library / "anna.jpg"), "sha256": digest, "bytes": len(accepted)}}
    assert recipe.actor.image == tmp_path / "spool" / f"{digest}.jpg"
    (library / "anna.jpg").unlink()
    (library / "anna.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    assert hashlib.sha256(recipe.actor.image.read_bytes()).hexdigest() == digest


def test_inputs_record_every_file_by_field(tmp_path: Path, shared_dir: Path) -> None:
    """An image and a wav: each listed with the path the user gave, its sha256 and its size."""
    import wave

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", inbox / "a.jpg")
    with wave.open(str(inbox / "b.wav"), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(24_000)
        out.writeframes((np.sin(np.arange(24_000) / 10) * 9000).astype(np.int16).tobytes())
    data = {"actor.image": inbox / "a.jpg", "speech.audio": inbox / "b.wav"}
    recipe, inputs = snapshot_inputs(parse_recipe({"slot_id": "s", "actor": {"image": str(inbox / "a.jpg")},
                                                   "speech": {"audio": str(inbox / "b.wav")}}, None, [inbox]),
                                     [inbox], tmp_path / "spool")
    assert inputs == {field: {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                              "bytes": path.stat().st_size} for field, path in data.items()}
    assert recipe.speech.audio.parent == tmp_path / "spool"


def _write_video(path: Path, seconds: float, fps: int, size_px: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width = stream.height = size_px
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            rgb = np.full((size_px, size_px, 3), (i * 7) % 255, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def test_a_200_s_clip_is_refused_from_its_metadata_before_any_decoding(tmp_path: Path) -> None:
    """The container says 200 s: refused at once naming motion.driving and the length (it used to be
    refused only after decoding and tracking 120 s of it), and the spool stays empty."""
    (tmp_path / "inbox").mkdir()
    _write_video(tmp_path / "inbox" / "long.mp4", 200, 5, 128)
    started = time.monotonic()
    with pytest.raises(StageInputError) as err:
        snapshot_inputs(_recipe(tmp_path / "inbox", motion__driving=str(tmp_path / "inbox" / "long.mp4")),
                        [tmp_path / "inbox"], tmp_path / "spool")
    elapsed_s = time.monotonic() - started
    assert err.value.field == "motion.driving" and "200 s" in err.value.message, err.value
    assert elapsed_s < 1.0, elapsed_s
    assert _spool_files(tmp_path / "spool") == []


def _write_npz(path: Path, members: dict[str, np.ndarray | tuple[tuple[int, ...], str]]) -> None:
    """An .npz of the given arrays, where a (shape, dtype) stands for zeros written in chunks, so that
    a member far larger than memory costs only its (tiny) deflated size."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, member in members.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
                if isinstance(member, np.ndarray):
                    np.lib.format.write_array(out, member, allow_pickle=False)
                    continue
                shape, dtype = member
                np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                          "fortran_order": False, "shape": shape})
                left = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                chunk = bytes(min(left, 16 * 2**20))
                while left > 0:
                    out.write(chunk[:left])
                    left -= len(chunk)


def _template(frames: int, **extra) -> dict[str, np.ndarray | tuple[tuple[int, ...], str]]:
    """A valid still template of `frames` frames at 25 fps, plus `extra` members."""
    return {"scale": np.ones((frames, 1), np.float32), "R": np.tile(np.eye(3, dtype=np.float32), (frames, 1, 1)),
            "exp": np.zeros((frames, 21, 3), np.float32), "t": np.zeros((frames, 3), np.float32),
            "fps": np.array(25.0, np.float32), **extra}


@pytest.mark.parametrize(("members", "reason"), [
    (_template(30, zeros=((64 * 2**20,), "<f4")), "unexpected array 'zeros'"),
    (_template(100_000), "100000 frames"),
    ({**_template(30), "exp": ((30, 21, 3), "|O")}, "'exp' holds object"),
    ({**_template(30), "t": ((30, 4), "<f4")}, "'t' should be T×3"),
], ids=["extra 256 MiB array", "too many frames", "object array", "wrong shape"])
def test_a_hostile_template_is_refused_from_its_headers(tmp_path: Path, members, reason: str) -> None:
    """Refused before any array is loaded (so in well under a second, whatever the arrays would
    inflate to), naming motion.driving and the file the user gave, never the spool copy."""
    (tmp_path / "inbox").mkdir()
    path = tmp_path / "inbox" / "motion.npz"
    _write_npz(path, members)
    started = time.monotonic()
    with pytest.raises(StageInputError) as err:
        snapshot_inputs(_recipe(tmp_path / "inbox", motion__driving=str(path)), [tmp_path / "inbox"],
                        tmp_path / "spool")
    assert time.monotonic() - started < 0.5
    assert err.value.field == "motion.driving" and reason in err.value.message, err.value
    assert "motion.npz" in err.value.message and "spool" not in str(err.value)
    assert _spool_files(tmp_path / "spool") == []


def test_a_real_template_still_passes(tmp_path: Path, shared_dir: Path) -> None:
    """A LivePortrait template from ../shared (with eye and lip ratios) is snapshotted as before."""
    shutil.copy(shared_dir / "motion_templates" / "d5.npz", tmp_path / "d5.npz")
    recipe, inputs = snapshot_inputs(_recipe(tmp_path, motion__driving=str(tmp_path / "d5.npz")), [tmp_path],
                                     tmp_path / "spool")
    assert recipe.motion.driving == tmp_path / "spool" / f"{inputs['motion.driving']['sha256']}.npz"


def test_a_directory_named_like_a_clip_is_refused_naming_the_field(tmp_path: Path) -> None:
    """`x.mp4/` is a folder: refused as not a regular file (it used to escape as IsADirectoryError)."""
    (tmp_path / "x.mp4").mkdir()
    with pytest.raises(StageInputError, match="not a regular file") as err:
        snapshot_inputs(_recipe(tmp_path, motion__driving=str(tmp_path / "x.mp4")), [tmp_path], tmp_path / "spool")
    assert err.value.field == "motion.driving"


def test_a_refusal_names_the_users_file_not_the_spool_copy(tmp_path: Path) -> None:
    """A clip that is no video: the message names notes.mp4, not <spool>/<sha256>.mp4."""
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(StageInputError) as err:
        snapshot_inputs(_recipe(tmp_path, motion__driving=str(tmp_path / "notes.mp4")), [tmp_path], tmp_path / "spool")
    digest = hashlib.sha256(b"not a video").hexdigest()
    assert "notes.mp4" in err.value.message and digest not in str(err.value) and "spool" not in str(err.value)


def test_a_refused_submit_leaves_nothing_in_the_spool(tmp_path: Path, shared_dir: Path) -> None:
    """A good portrait with a bad wav: the portrait passed its check, but the submit is refused, so
    neither file stays in the spool; an accepted copy stored earlier is left alone."""
    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    inbox.mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", inbox / "a.jpg")
    (inbox / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + bytes(5 * 2**20))
    bad = parse_recipe({"slot_id": "s", "actor": {"image": str(inbox / "a.jpg")},
                        "speech": {"audio": str(inbox / "b.wav")}}, None, [inbox])
    with pytest.raises(StageInputError) as err:
        snapshot_inputs(bad, [inbox], spool)
    assert err.value.field == "speech.audio"
    assert _spool_files(spool) == []
    good, _ = snapshot_inputs(_recipe(inbox, actor__image=str(inbox / "a.jpg")), [inbox], spool)
    with pytest.raises(StageInputError):
        snapshot_inputs(bad, [inbox], spool)
    assert _spool_files(spool) == [good.actor.image]
