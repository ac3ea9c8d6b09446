"""Native libraries' info/warning chatter is dropped from stderr; their errors and all Python output pass."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vortexd.native_stderr import is_routine_native_line

# Lines exactly as MediaPipe 0.10.21 and TensorFlow Lite print them on this machine.
CHATTER = [
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"W0000 00:00:1795323014.221010    7865 inference_feedback_manager.cc:114] Feedback manager requires "
    b"a model with a single signature inference. Disabling support for feedback tensors.",
    b"W0000 00:00:1795323014.246801    7868 landmark_projection_calculator.cc:186] Using NORM_RECT without "
    b"IMAGE_DIMENSIONS is only supported for the square ROI.",
    b"I0000 00:00:1795323014.246801    7868 gl_context.cc:357] GL version: 3.2",
]
KEPT = [
    b"E0000 00:00:1795323014.246801    7868 calculator_graph.cc:887] INVALID_ARGUMENT: graph failed",
    b"F0000 00:00:1795323014.246801    7868 check.cc:1] Check failed: x",
    b"WARNING: something else entirely",
    b"Segmentation fault",
]


@pytest.mark.parametrize("line", CHATTER)
def test_routine_native_lines_are_recognised(line: bytes) -> None:
    """Each known chatter line is classified as routine."""
    assert is_routine_native_line(line)


@pytest.mark.parametrize("line", KEPT)
def test_errors_and_unknown_lines_are_not_routine(line: bytes) -> None:
    """absl E/F lines and anything unrecognised are never classified as routine."""
    assert not is_routine_native_line(line)


def test_filter_in_a_real_process_drops_chatter_and_keeps_the_rest() -> None:
    """Raw fd-2 writes lose only the chatter; errors, Python's stderr and a partial last line arrive whole."""
    rounds = 200
    script = textwrap.dedent(f"""
        import os, sys
        from vortexd.native_stderr import drop_native_chatter
        restore = drop_native_chatter()
        chatter, kept = {CHATTER!r}, {KEPT!r}
        for i in range({rounds}):
            for a, b in zip(chatter, kept):
                os.write(2, a + b"\\n" + b + b"\\n")
            print("python line", i, file=sys.stderr)
        os.write(2, b"no newline at the end")
        restore()
        print("after restore", file=sys.stderr)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(is_routine_native_line(line) for line in lines), lines[:10]
    # Both streams arrive complete and no line is spliced into another.
    assert [line for line in lines if line in KEPT] == KEPT * rounds
    assert [line for line in lines if line.startswith(b"python line")] == [
        f"python line {i}".encode() for i in range(rounds)]
    assert result.stderr.endswith(b"no newline at the endafter restore\n")


@pytest.mark.slow
def test_render_cli_stderr_is_only_progress_and_results(tmp_path: Path) -> None:
    """`vortexd render` of a 2 s slot prints no MediaPipe/TFLite chatter, unless native_chatter=keep."""
    (tmp_path / "r.json").write_text(json.dumps({"slot_id": "quiet", "speech": {"text": "Hello there."},
                                                "output": {"duration_s": 2}}))

    def render(out: str, *env: tuple[str, str]) -> list[bytes]:
        import os

        result = subprocess.run([sys.executable, "-m", "vortexd.cli", "render", str(tmp_path / "r.json"),
                                 "-o", str(tmp_path / out)], capture_output=True, timeout=300,
                                env={**os.environ, **dict(env)})
        assert result.returncode == 0, result.stderr
        return result.stderr.splitlines()

    quiet = render("a")
    assert quiet and not any(is_routine_native_line(line) for line in quiet), quiet
    assert any(line.startswith(b"warp") for line in quiet)
    noisy = render("b", ("VORTEX_NATIVE_CHATTER", "keep"))
    assert any(is_routine_native_line(line) for line in noisy)
