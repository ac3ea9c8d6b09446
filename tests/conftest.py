"""Shared fixtures: where the repo and the shared data live, and warning-free MediaPipe logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet TensorFlow Lite / absl chatter from MediaPipe in test output.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared data folder beside the repo (skips when it is absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT
