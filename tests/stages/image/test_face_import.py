"""MediaPipe is loaded lean (only face detection and the face mesh) and finds the same face."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

_PROBE = """
import json, sys
{preload}
from stages.image.face import detect_landmarks, face_detection_score
import numpy as np
from PIL import Image
from stages.image.library import builtin_portrait_path
image = np.ascontiguousarray(Image.open(builtin_portrait_path()).convert("RGB"))
print(json.dumps({{"points": detect_landmarks(image).tolist(), "score": face_detection_score(image),
                  "matplotlib": "matplotlib" in sys.modules}}))
"""


def _probe(preload: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(preload=preload)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lean_mediapipe_import_skips_matplotlib_and_finds_the_same_landmarks():
    lean = _probe("")
    full = _probe("import mediapipe")  # the package's own __init__ first: every solution, matplotlib
    assert not lean["matplotlib"], "the lean import still pulled in matplotlib"
    assert full["matplotlib"], "the comparison did not load mediapipe the usual way"
    assert lean["points"] == full["points"] and lean["score"] == full["score"]
    assert len(lean["points"]) == 478
