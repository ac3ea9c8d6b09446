"""Inputs at submit against a real daemon subprocess (issue P10, defects 2, 7 and 8): a library
symlink never publishes the face it leads to, hostile files are refused naming the field and the
user's file, and a refused submit leaves nothing in the spool."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.daemon import DaemonProcess, wait_for, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, shared_dir: Path):
    """A daemon whose allowed root is `<folder>/inbox` and whose actor library is `<folder>/actors`
    (anna.jpg, a real portrait, and evil.jpg, a symlink to a face in `<folder>/outside`)."""
    folder = tmp_path_factory.mktemp("vortexd-inputs")
    for name in ("inbox", "actors", "outside"):
        (folder / name).mkdir()
    shutil.copy(shared_dir / "faces" / "s9.jpg", folder / "actors" / "anna.jpg")
    shutil.copy(shared_dir / "faces" / "s10.jpg", folder / "outside" / "secret.jpg")
    (folder / "actors" / "evil.jpg").symlink_to(folder / "outside" / "secret.jpg")
    process = DaemonProcess(folder, write_config(folder, allowed_roots=[str(folder / "inbox")],
                                                 actor_library_dir=str(folder / "actors")))
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


def _recipe(slot_id: str, **sections) -> dict:
    return {"slot_id": slot_id, "speech": {"text": "Good evening."}, "output": {"duration_s": 2}, **sections}


def _state(daemon: DaemonProcess, slot_id: str) -> str | None:
    answer = daemon.request("status", {"slot_id": slot_id})
    return answer["result"]["state"] if answer["ok"] else None


def _spool(daemon: DaemonProcess) -> list[str]:
    spool = daemon.folder / "spool"
    return sorted(str(p.relative_to(spool)) for p in spool.rglob("*")) if spool.exists() else []  # folders count


def _outcome(daemon: DaemonProcess, answer: dict, slot_id: str) -> str:
    """Where a submit ended: refused at submit, or the state its slot finished in."""
    if not answer["ok"]:
        return "refused"
    wait_for(lambda: _state(daemon, slot_id) in ("published", "failed"), 90, f"slot {slot_id} to finish")
    return _state(daemon, slot_id)


def test_a_library_symlink_never_publishes_the_face_it_leads_to(daemon: DaemonProcess) -> None:
    """`actor.prompt = "evil"` picks a symlink to a face outside the library: refused naming the
    prompt (without naming where it leads), and nothing is published for it."""
    answer = daemon.request("submit", {"recipe": _recipe("evil", actor={"prompt": "evil"})})
    assert _outcome(daemon, answer, "evil") == "refused", answer  # picked and checked at submit
    assert answer["error"]["details"]["field"] == "actor.prompt", answer
    assert "symbolic link" in answer["error"]["message"]
    assert "outside" not in json.dumps(answer) and "secret" not in json.dumps(answer)
    assert not (daemon.folder / "out" / "evil").exists()


def test_a_library_file_swapped_for_a_symlink_after_the_ack_is_not_what_renders(daemon: DaemonProcess) -> None:
    """anna.jpg is accepted by prompt, then replaced by a symlink to the outside face: the outside
    face is never published; what is published is the accepted portrait, listed in the manifest."""
    anna = daemon.folder / "actors" / "anna.jpg"
    accepted = anna.read_bytes()
    answer = daemon.request("submit", {"recipe": _recipe("anna", actor={"prompt": "anna"}, motion={"seed": 1})})
    assert answer["ok"], answer
    anna.rename(daemon.folder / "actors" / "anna-kept.jpg")
    anna.symlink_to(daemon.folder / "outside" / "secret.jpg")
    try:
        outcome = _outcome(daemon, answer, "anna")
    finally:
        anna.unlink()
        (daemon.folder / "actors" / "anna-kept.jpg").rename(anna)
    # The pick was snapshotted at submit: the swap changes nothing of what renders.
    assert outcome == "published", daemon.request("status", {"slot_id": "anna"})
    manifest = json.loads((daemon.folder / "out" / "anna" / "manifest.json").read_text())
    assert manifest["inputs"]["actor.image"] == hashlib.sha256(accepted).hexdigest(), manifest["inputs"]


def _hostile_template(path: Path) -> Path:
    """A valid 30-frame template plus a 256 MiB array of zeros (a few hundred KB deflated)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        arrays = {"scale": np.ones((30, 1), np.float32), "R": np.tile(np.eye(3, dtype=np.float32), (30, 1, 1)),
                  "exp": np.zeros((30, 21, 3), np.float32), "t": np.zeros((30, 3), np.float32),
                  "fps": np.array(25.0, np.float32)}
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as out:
                np.lib.format.write_array(out, array, allow_pickle=False)
        with archive.open("zeros.npy", "w", force_zip64=True) as out:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (64 * 2**20,)})
            for _ in range(16):
                out.write(bytes(16 * 2**20))
    return path


def test_hostile_files_are_refused_naming_the_field_and_the_users_file(daemon: DaemonProcess) -> None:
    """A folder named x.mp4 and a template with an extra 256 MiB array: `invalid_recipe` naming
    motion.driving and the file as the user gave it (never `internal`, never the spool path)."""
    inbox = daemon.folder / "inbox"
    (inbox / "x.mp4").mkdir()
    cases = {"x.mp4": inbox / "x.mp4", "motion.npz": _hostile_template(inbox / "motion.npz")}
    for name, path in cases.items():
        started = time.monotonic()
        answer = daemon.request("submit", {"recipe": _recipe(f"hostile-{path.suffix[1:]}",
                                                             motion={"driving": str(path)})})
        assert time.monotonic() - started < 2.0
        assert answer["error"]["code"] == "invalid_recipe", answer
        assert answer["error"]["details"]["field"] == "motion.driving"
        assert name in answer["error"]["message"] and "spool" not in json.dumps(answer), answer


def test_refused_submits_leave_nothing_in_the_spool(daemon: DaemonProcess, shared_dir: Path) -> None:
    """Five refused 5 MiB files that are no pictures, and a good portrait refused with a bad wav:
    after each answer the spool holds nothing (it used to keep every refused file)."""
    inbox = daemon.folder / "inbox"
    for i in range(5):
        junk = inbox / f"junk{i}.jpg"
        junk.write_bytes(bytes([i]) * (5 * 2**20))
        answer = daemon.request("submit", {"recipe": _recipe(f"junk{i}", actor={"image": str(junk)})})
        assert answer["error"]["code"] == "invalid_recipe", answer
        assert _spool(daemon) == []
    shutil.copy(shared_dir / "faces" / "s12.jpg", inbox / "good.jpg")
    (inbox / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    answer = daemon.request("submit", {"recipe": {"slot_id": "mixed", "actor": {"image": str(inbox / "good.jpg")},
                                                  "speech": {"audio": str(inbox / "bad.wav")},
                                                  "output": {"duration_s": 2}}})
    assert answer["error"]["details"]["field"] == "speech.audio", answer
    assert _spool(daemon) == []
