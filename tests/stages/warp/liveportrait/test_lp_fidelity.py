"""Our networks reproduce every official reference case; the fidelity CLI catches a tampered set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="LivePortrait networks need torch")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the vectors are safetensors files")

from stages.warp.liveportrait.fidelity import Harness, format_report  # noqa: E402

CASES_FILE = Path(__file__).resolve().parents[5] / "shared" / "liveportrait" / "cases.json"
CASE_NAMES = list(json.loads(CASES_FILE.read_text())["cases"]) if CASES_FILE.is_file() else []


@pytest.fixture(scope="module")
def harness(lp_dir: Path, two_threads: None) -> Harness:
    """One harness for the module, so networks load once."""
    return Harness(lp_dir)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("E2E") else n
                                  for n in CASE_NAMES])
def test_case_matches_official_outputs(name: str, harness: Harness) -> None:
    """Every stored intermediate/output tensor of the case is within the README tolerance."""
    with torch.inference_mode():
        checks = harness.run(name)
    assert checks, f"case {name} compared nothing"
    assert all(c.ok for c in checks), "\n" + format_report(checks)


def _tampered_copy(lp_dir: Path, tmp_path: Path, file: str, key: str, delta: float) -> Path:
    """A copy of the vectors folder with `key` of `file` shifted by `delta` (other files linked)."""
    copy = tmp_path / "vectors"
    copy.mkdir()
    for src in lp_dir.iterdir():
        if src.name != file:
            (copy / src.name).symlink_to(src)
    tensors = safetensors_torch.load_file(str(lp_dir / file))
    tensors[key] = tensors[key] + delta
    safetensors_torch.save_file(tensors, str(copy / file))
    return copy


def _cli(folder: Path, repo_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.warp.liveportrait.fidelity", str(folder)],
                          cwd=repo_root, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_exits_zero_on_shared_vectors(lp_dir: Path, repo_root: Path) -> None:
    """`python -m stages.warp.liveportrait.fidelity DIR` passes the official set, comparing every tensor."""
    done = _cli(lp_dir, repo_root)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in CASE_NAMES:
        assert f"\n{name} " in done.stdout
    stored = 0  # every intermediate/output tensor of every case file must be compared, none skipped
    for case in json.loads((lp_dir / "cases.json").read_text())["cases"].values():
        keys = safetensors_torch.load_file(str(lp_dir / case["file"])).keys()
        stored += sum(k.startswith(("intermediate.", "output.")) for k in keys)
    assert f"{stored} tensors in {len(CASE_NAMES)} cases: all within tolerance" in done.stdout


@pytest.mark.slow
def test_cli_exits_nonzero_on_tampered_output(lp_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    """Shifting one stored W output by 1e-2 makes the CLI fail and name that tensor."""
    folder = _tampered_copy(lp_dir, tmp_path, "W.safetensors", "output.out", 1e-2)
    done = _cli(folder, repo_root)
    assert done.returncode == 1, done.stdout
    failed = [line for line in done.stdout.splitlines() if line.split()[5:6] == ["FAIL"]]
    assert len(failed) == 1 and failed[0].startswith("W ") and "output.out" in failed[0]


def test_tampered_degree_fails_relative_bound(lp_dir: Path, tmp_path: Path, two_threads: None) -> None:
    """A 2e-4° head-pose error (2e-6 of the 97.5° full scale) fails, and only that tensor fails."""
    folder = _tampered_copy(lp_dir, tmp_path, "C_transform_keypoint.safetensors",
                            "intermediate.logits.pitch_deg", 2e-4)
    with torch.inference_mode():
        checks = Harness(folder).run("C_transform_keypoint")
    bad = [c for c in checks if not c.ok]
    assert [c.name for c in bad] == ["intermediate.logits.pitch_deg"]


def test_missing_case_file_is_a_failure(lp_dir: Path, tmp_path: Path) -> None:
    """A case whose file is absent is reported as failed instead of being skipped."""
    copy = tmp_path / "vectors"
    copy.mkdir()
    for src in lp_dir.iterdir():
        if src.name != "S_lip.safetensors":
            (copy / src.name).symlink_to(src)
    with torch.inference_mode():
        checks = Harness(copy).run("S_lip")
    assert len(checks) == 1 and not checks[0].ok and "S_lip.safetensors" in checks[0].note


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CASE_NAMES if n.startswith(("W", "G", "E2E"))])
def test_rewritten_w_and_g_match_official_outputs(name: str, lp_dir: Path, two_threads: None) -> None:
    """W and G as the engine runs them (BatchNorm folded, spectral norm frozen, hourglass padded)
    still reproduce the official outputs within the README tolerance."""
    with torch.inference_mode():
        checks = Harness(lp_dir, for_inference=True).run(name)
    assert checks and all(c.ok for c in checks), "\n" + format_report(checks)
