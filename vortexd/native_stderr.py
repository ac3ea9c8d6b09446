"""Keep native libraries' routine chatter off the operator's stderr; pass everything else through.

MediaPipe's C++ graph (absl logging, before absl::InitializeLog) and TensorFlow Lite write
info and warning lines straight to file descriptor 2 each time a face-mesh graph starts, a
dozen per slot, and neither offers a switch reachable from Python. The only place to stop them
is the descriptor itself: fd 2 becomes a pipe, and a thread copies each line from it to the
real stderr unless it is one of those routine lines. Errors and fatal messages from native
code (absl "E"/"F" lines) and anything unrecognised still come through.

Python's own stderr (tracebacks, structlog, progress, faulthandler) is moved onto a duplicate
of the real stderr first, so it never passes through the pipe and nothing of it can be held up
or lost there.
"""

from __future__ import annotations

import faulthandler
import io
import os
import re
import sys
import threading
from collections.abc import Callable

ROUTINE_NATIVE_LINE = re.compile(
    rb"^(?:"
    # absl info and warning lines; before InitializeLog the "time" is hh:mm:<epoch seconds>:
    # "W0000 00:00:1795323014.221010    7865 file.cc:114] ..."
    rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|INFO: Created TensorFlow Lite [\w ]*delegate for CPU\."
    rb")"
)
"""A line of start-up chatter from MediaPipe or TensorFlow Lite that an operator never needs."""


def is_routine_native_line(line: bytes) -> bool:
    """True for native info/warning chatter that the filter drops."""
    return ROUTINE_NATIVE_LINE.match(line) is not None


def _copy_lines(read_fd: int, write_fd: int) -> None:
    with open(read_fd, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                # One write per line: a pipe keeps writes up to PIPE_BUF whole, so Python's own
                # lines on the same stderr cannot land inside one of these.
                if not is_routine_native_line(line):
                    os.write(write_fd, line + b"\n")
        if pending and not is_routine_native_line(pending):
            os.write(write_fd, pending)


def drop_native_chatter() -> Callable[[], None]:
    """Filter fd 2 as the module docstring says; returns a function that undoes it (idempotent).

    Call it once, early, in the main thread, before anything caches `sys.stderr`.
    """
    sys.stderr.flush()
    real_fd = os.dup(2)
    # Python-level writers go straight to the real stderr from now on. Line buffering, not
    # write-through: print() writes its text and its newline separately, and a native line
    # copied in between would land in the middle of the Python one.
    python_stderr = io.TextIOWrapper(open(os.dup(real_fd), "wb", buffering=0), encoding="utf-8",
                                     errors="backslashreplace", line_buffering=True)
    previous_stderr = sys.stderr
    sys.stderr = python_stderr
    if faulthandler.is_enabled():
        faulthandler.enable(file=python_stderr)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    copier = threading.Thread(target=_copy_lines, args=(read_fd, real_fd), name="native-stderr", daemon=True)
    copier.start()
    restored = False

    def restore() -> None:
        nonlocal restored
        if restored:
            return
        restored = True
        # fd 2 was the pipe's last write end: pointing it back at the real stderr gives the
        # copier end-of-file once children holding a copy have exited, and it flushes and stops.
        os.dup2(real_fd, 2)
        copier.join(timeout=1.0)
        sys.stderr = previous_stderr
        python_stderr.close()

    return restore
