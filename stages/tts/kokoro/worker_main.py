"""Entry point of a Kokoro worker process: `python -m stages.tts.kokoro.worker_main MODEL`.

Loads one single-thread session, says it is ready, then answers requests read from stdin until
stdin closes (frames: see frames.py; workers.py is the only client). Anything printed by
libraries goes to stderr, never stdout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stages.tts.kokoro.frames import read_frame, write_frame


def main(argv: list[str]) -> int:
    """Serve requests for the model at argv[0]; returns the process exit status."""
    # Claim the real stdout for frames and point fd 1 at stderr, so a library that prints
    # (onnxruntime warnings, a stray print) cannot corrupt the protocol.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        from stages.tts.kokoro.session import KokoroSession

        session = KokoroSession(Path(argv[0]), threads=1)
    except Exception as exc:  # reported to the parent, which raises it there
        write_frame(channel, ("error", f"{type(exc).__name__}: {exc}"))
        return 1
    write_frame(channel, ("ready", os.getpid()))
    while (request := read_frame(requests)) is not None:
        try:
            token_ids, style, speed = request
            write_frame(channel, ("ok", session.run(token_ids, style, speed)))
        except Exception as exc:  # a bad request must not kill the worker
            write_frame(channel, ("error", f"{type(exc).__name__}: {exc}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
