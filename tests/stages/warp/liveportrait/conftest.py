"""Fixtures for the LivePortrait network tests: the shared reference vectors and torch threads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lp_dir(shared_dir: Path) -> Path:
    """The shared LivePortrait fidelity folder (skips when absent)."""
    folder = shared_dir / "liveportrait"
    if not (folder / "cases.json").is_file():
        pytest.skip(f"{folder} has no cases.json")
    return folder


@pytest.fixture(scope="session")
def lp_cases(lp_dir: Path) -> dict:
    """The parsed cases.json."""
    return json.loads((lp_dir / "cases.json").read_text())


@pytest.fixture(scope="session")
def lp_manifest(lp_dir: Path) -> dict:
    """The parsed manifest_full.json (official state_dict layout at full size)."""
    return json.loads((lp_dir / "manifest_full.json").read_text())


@pytest.fixture(scope="module")
def two_threads():
    """Run torch with the 2 CPU threads the vectors were made with; restore afterwards."""
    torch = pytest.importorskip("torch", reason="LivePortrait networks need torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
