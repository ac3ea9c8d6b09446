"""publish_slot: a reader sees a whole slot or none, a published slot is never overwritten."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.encode import SlotExistsError, clean_stale_temp, publish_slot
from stages.encode.publish import TEMP_PREFIX
from stages.errors import StageInputError


def _writer(payload: bytes = b"fake-but-real-bytes" * 100):
    calls = []

    def write(folder: Path) -> dict:
        calls.append(folder)
        (folder / "video.mp4").write_bytes(payload)
        (folder / "thumbs").mkdir()
        (folder / "thumbs" / "0.jpg").write_bytes(payload[:10])
        return {"slot_id": "a", "seed": 7}

    return write, calls


def test_published_slot_has_files_and_hashed_manifest_and_no_temp(tmp_path: Path) -> None:
    """The slot folder holds the written files and a manifest with each file's sha256 and size; no temp dir remains."""
    write, calls = _writer()
    published = publish_slot(tmp_path, "a", write)
    slot = published.path
    assert slot == tmp_path / "a" and calls[0].parent == tmp_path and calls[0].name.startswith(".")
    manifest = json.loads((slot / "manifest.json").read_text())
    assert published.manifest == manifest  # what the caller gets is what readers will read
    video = (slot / "video.mp4").read_bytes()
    assert manifest["seed"] == 7
    assert manifest["files"]["video.mp4"] == {"sha256": hashlib.sha256(video).hexdigest(), "bytes": len(video)}
    assert manifest["files"]["thumbs/0.jpg"]["bytes"] == 10 and "manifest.json" not in manifest["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert (slot.stat().st_mode & 0o777) == 0o755


def test_exception_inside_write_leaves_no_folder_and_no_temp(tmp_path: Path) -> None:
    """If write() fails half-way, the error propagates and out_root is left exactly as it was."""
    def write(folder: Path) -> dict:
        (folder / "video.mp4").write_bytes(b"half")
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        publish_slot(tmp_path, "b", write)
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_manifest_leaves_nothing(tmp_path: Path) -> None:
    """A manifest that cannot be written as strict JSON (NaN, objects) fails the publish and leaves nothing."""
    for bad in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises((ValueError, TypeError)):
            publish_slot(tmp_path, "c", lambda folder, bad=bad: bad)
    assert list(tmp_path.iterdir()) == []


def test_existing_slot_is_refused_before_writing_and_left_untouched(tmp_path: Path) -> None:
    """Publishing an id that exists raises SlotExistsError (a FileExistsError) without calling write()."""
    publish_slot(tmp_path, "a", _writer(b"first")[0])
    before = (tmp_path / "a" / "video.mp4").read_bytes()
    write, calls = _writer(b"second")
    with pytest.raises(FileExistsError, match="already published") as caught:
        publish_slot(tmp_path, "a", write)
    assert isinstance(caught.value, SlotExistsError) and calls == []
    assert (tmp_path / "a" / "video.mp4").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_slot_appearing_during_write_is_not_overwritten(tmp_path: Path) -> None:
    """If another writer publishes the id (even an empty folder) while write() runs, the rename refuses and cleans up."""
    def write(folder: Path) -> dict:
        (folder / "video.mp4").write_bytes(b"mine")
        (tmp_path / "race").mkdir()  # the competitor wins: an empty folder a plain rename would replace
        return {}

    with pytest.raises(SlotExistsError):
        publish_slot(tmp_path, "race", write)
    assert list((tmp_path / "race").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]


@pytest.mark.parametrize("slot_id", ["", ".hidden", "a/b", "../up", "x" * 200, "sp ace"])
def test_unsafe_slot_ids_are_refused(tmp_path: Path, slot_id: str) -> None:
    """Slot ids that are not one plain path component raise StageInputError naming slot_id."""
    with pytest.raises(StageInputError) as caught:
        publish_slot(tmp_path, slot_id, _writer()[0])
    assert caught.value.field == "slot_id" and list(tmp_path.iterdir()) == []


_BLOCKED_WRITER = """
import sys, time
from pathlib import Path
from stages.encode import publish_slot

def write(folder):
    (folder / "video.mp4").write_bytes(b"half a video")
    print("writing", flush=True)
    time.sleep(600)

publish_slot(Path(sys.argv[1]), sys.argv[2], write)
"""


def _blocked_writer(out_root: Path, slot_id: str) -> subprocess.Popen:
    """A real publisher process stopped inside write(), its temporary folder half written."""
    writer = subprocess.Popen([sys.executable, "-c", _BLOCKED_WRITER, str(out_root), slot_id],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[3])
    assert writer.stdout.readline().strip() == "writing"
    return writer


def test_clean_stale_temp_removes_a_killed_writers_folder_even_as_a_zombie(tmp_path: Path) -> None:
    """kill -9 mid-write, the writer not yet reaped (a zombie whose pid still answers): its folder
    and lock go; a live writer's folder and published slots stay."""
    import signal

    (tmp_path / "published").mkdir()
    killed, alive = _blocked_writer(tmp_path, "slot-1"), _blocked_writer(tmp_path, "slot-2")
    try:
        killed.send_signal(signal.SIGKILL)
        time.sleep(0.5)  # dead, not reaped: os.kill(pid, 0) would still say it exists
        os.kill(killed.pid, 0)
        removed = clean_stale_temp(tmp_path)
        assert [p.name.startswith(f"{TEMP_PREFIX}slot-1-") for p in removed] == [True]
        left = sorted(p.name for p in tmp_path.iterdir())
        assert "published" in left and not any("slot-1" in name for name in left)
        assert sum(name.startswith(f"{TEMP_PREFIX}slot-2-") for name in left) == 2  # folder + its lock
    finally:
        for writer in (killed, alive):
            writer.kill()
            writer.wait()
    assert clean_stale_temp(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["published"]
    assert clean_stale_temp(tmp_path / "absent") == []


