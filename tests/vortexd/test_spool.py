"""Inputs snapshotted at submit: copied by content, checked where they really are, swept when done."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from stages.errors import StageInputError
from vortexd.recipe import parse_recipe
from vortexd.spool import input_files, snapshot_inputs, sweep_spool


def _recipe(image: Path, root: Path):
    return parse_recipe({"slot_id": "s", "actor": {"image": str(image)}, "speech": {"text": "Hi."}}, None, [root])


def test_the_image_is_copied_by_content_and_the_recipe_names_the_copy(tmp_path: Path, shared_dir: Path) -> None:
    """The spool copy is named by the sha256 of the bytes read; later changes to the original do not matter."""
    inbox, spool = tmp_path / "inbox", tmp_path / "spool"
    inbox.mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", inbox / "a.jpg")
    digest = hashlib.sha256((inbox / "a.jpg").read_bytes()).hexdigest()
    recipe, inputs = snapshot_inputs(_recipe(inbox / "a.jpg", inbox), [inbox], spool)
    assert inputs == {"actor.image": {"path": str(inbox / "a.jpg"), "sha256": digest,
                                      "bytes": (inbox / "a.jpg").stat().st_size}}
    assert recipe.actor.image == spool / f"{digest}.jpg" and recipe.actor.image.read_bytes() == (inbox / "a.jpg").read_bytes()
    (inbox / "a.jpg").write_bytes(b"changed")
    assert hashlib.sha256(recipe.actor.image.read_bytes()).hexdigest() == digest


def test_a_symlink_is_refused_even_when_it_points_inside_the_roots(tmp_path: Path, shared_dir: Path) -> None:
    """The file is opened without following a final symlink: what was checked is what is read."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", inbox / "a.jpg")
    recipe = _recipe(inbox / "a.jpg", inbox)
    (inbox / "a.jpg").rename(inbox / "b.jpg")
    (inbox / "a.jpg").symlink_to(inbox / "b.jpg")
    with pytest.raises(StageInputError, match="symbolic link") as err:
        snapshot_inputs(recipe, [inbox], tmp_path / "spool")
    assert err.value.field == "actor.image"


def test_a_file_whose_folder_was_swapped_out_of_the_roots_is_refused(tmp_path: Path, shared_dir: Path) -> None:
    """A parent folder replaced by a link to elsewhere: the opened file's real place is checked."""
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    (inbox / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", inbox / "sub" / "a.jpg")
    recipe = _recipe(inbox / "sub" / "a.jpg", inbox)
    shutil.copy(shared_dir / "faces" / "s10.jpg", elsewhere / "a.jpg")
    shutil.rmtree(inbox / "sub")
    (inbox / "sub").symlink_to(elsewhere)
    with pytest.raises(StageInputError, match="outside the allowed roots") as err:
        snapshot_inputs(recipe, [inbox], tmp_path / "spool")
    assert "elsewhere" not in str(err.value)


def test_sweep_keeps_what_unfinished_slots_name(tmp_path: Path) -> None:
    """At start-up only the spool files of unfinished slots stay."""
    spool = tmp_path / "spool"
    spool.mkdir()
    kept, dropped = spool / "a.jpg", spool / "b.wav"
    kept.write_bytes(b"a"), dropped.write_bytes(b"b")
    assert sweep_spool(spool, {kept}) == 1
    assert sorted(p.name for p in spool.iterdir()) == ["a.jpg"]
    assert sweep_spool(tmp_path / "absent", set()) == 0


def test_sweep_removes_a_dead_submits_staging_but_not_a_live_one(tmp_path: Path) -> None:
    """A daemon killed mid-submit leaves its staging folder: the next process's sweep removes it, while
    a sweep never touches the staging folder of a submit this process is still checking."""
    import subprocess
    import sys

    spool = tmp_path / "spool"
    script = ("import sys; from pathlib import Path; from vortexd.spool import STAGING_PREFIX, _PROCESS_TAG; "
              "d = Path(sys.argv[1]) / f'{STAGING_PREFIX}{_PROCESS_TAG}-dead'; d.mkdir(parents=True); "
              "(d / 'big.mp4').write_bytes(bytes(1000))")
    subprocess.run([sys.executable, "-c", script, str(spool)], check=True)
    from vortexd.spool import STAGING_PREFIX, _PROCESS_TAG

    live = spool / f"{STAGING_PREFIX}{_PROCESS_TAG}-live"
    live.mkdir()
    assert sweep_spool(spool, set()) == 0
    assert [p.name for p in spool.iterdir()] == [live.name]


def test_input_files_lists_image_and_audio(tmp_path: Path) -> None:
    """Both kinds of input a recipe can name."""
    recipe = parse_recipe({"slot_id": "s", "actor": {"image": str(tmp_path / "x.jpg")},
                           "speech": {"audio": str(tmp_path / "y.wav")}}, None, [tmp_path])
    assert input_files(recipe) == {tmp_path / "x.jpg", tmp_path / "y.wav"}


def test_a_fifo_in_the_roots_is_refused_without_hanging(tmp_path: Path) -> None:
    """A named pipe where an image should be: refused at once as not a regular file."""
    import os

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "a.jpg")
    recipe = _recipe(inbox / "a.jpg", inbox)
    with pytest.raises(StageInputError, match="not a regular file") as err:
        snapshot_inputs(recipe, [inbox], tmp_path / "spool")
    assert err.value.field == "actor.image"


@pytest.mark.slow
def test_a_finished_slots_inputs_leave_the_spool_while_a_waiting_slots_stay(tmp_path: Path, shared_dir: Path) -> None:
    """A real daemon holding two slots (drained): cancelling one sweeps its spooled portrait and
    keeps the other's; resumed, the other publishes from its copy, and then the spool is empty."""
    from tests.support.daemon import DaemonProcess, wait_for, write_config

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    portrait = (shared_dir / "faces" / "s10.jpg").read_bytes()
    (inbox / "first.jpg").write_bytes(portrait)
    (inbox / "second.jpg").write_bytes(portrait + b"\0")  # other bytes, same face
    copies = {name: tmp_path / "spool" / f"{hashlib.sha256((inbox / name).read_bytes()).hexdigest()}.jpg"
              for name in ("first.jpg", "second.jpg")}
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, allowed_roots=[str(tmp_path)]))
    daemon.start()
    try:
        assert daemon.request("drain")["ok"]
        for slot_id, name in (("one", "first.jpg"), ("two", "second.jpg")):
            recipe = {"slot_id": slot_id, "actor": {"image": str(inbox / name)}, "speech": {"text": "Hello."},
                      "output": {"duration_s": 1}}
            assert daemon.request("submit", {"recipe": recipe})["ok"]
        assert copies["first.jpg"].exists() and copies["second.jpg"].exists()
        assert daemon.request("cancel", {"slot_id": "one"})["ok"]
        wait_for(lambda: not copies["first.jpg"].exists(), 10, "the cancelled slot's portrait swept")
        assert copies["second.jpg"].exists()
        assert daemon.request("resume")["ok"]
        wait_for(lambda: daemon.request("status", {"slot_id": "two"})["result"]["state"] == "published",
                 60, "the second slot published")
        wait_for(lambda: not any((tmp_path / "spool").iterdir()), 10, "the spool emptied")
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
