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


@pytest.fixture(scope="session")
def astronaut():
    """The built-in astronaut actor. Its landmarks come from MediaPipe, or, where MediaPipe is not
    installed (the GPU machine), from the .npy named by VORTEX_ASTRONAUT_LANDMARKS, which
    benchmarks/gpu/prepare.sh writes where MediaPipe runs."""
    import os

    import numpy as np

    from stages.types import Actor

    path = os.environ.get("VORTEX_ASTRONAUT_LANDMARKS")
    if path:
        from skimage import data

        return Actor(np.ascontiguousarray(data.astronaut()), np.load(path), np.eye(2, 3), "builtin:astronaut", "test")
    pytest.importorskip("mediapipe", reason="face landmarks need MediaPipe (or VORTEX_ASTRONAUT_LANDMARKS)")
    from stages.image import load_actor

    return load_actor()
