"""A short real driving clip for tests: the first frames of a clip in ../shared/driving, re-encoded."""

from __future__ import annotations

from pathlib import Path

SHARED_DRIVING = Path(__file__).resolve().parents[3] / "shared" / "driving"
"""The real face videos beside the repository (absent on machines without the shared data)."""


def first_frames_clip(source: Path, target: Path, n_frames: int, fps: int = 25) -> Path:
    """The first `n_frames` frames of `source` written to `target` (H.264 at `fps`): seconds of face
    tracking and a few M batches instead of a whole clip's, with a real face moving in it."""
    import av

    with av.open(str(source)) as reader:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(n_frames), reader.decode(video=0))]
    with av.open(str(target), "w") as writer:
        stream = writer.add_stream("libx264", rate=fps, options={"crf": "12"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            writer.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        writer.mux(stream.encode())
    return target
