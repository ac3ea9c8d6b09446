"""One 45 s slot on the embedded backends: per-stage seconds, end to end, CPU seconds, frames/s, peak RSS.

    .venv/bin/python benchmarks/bench_slot.py [--recipe examples/demo.toml] [--sheet /tmp/sheet.png]

Renders twice in one process: the first run pays one-off costs (imports, MediaPipe graph
loading, warp preparation); the second is what the daemon sees for every later slot.
`warp`, `encode` and `verify` overlap (the encoder and the checks run on threads of their own
beside the warp); `drain` is the wait after the last warped chunk. CPU seconds are the whole
process's (every thread's), the figure that bounds the wall time on a 2-core machine.
For the whole-process wall time of `vortexd render` (imports included), time the command itself.
Writes a contact sheet (every 45th frame of the second run) so a human can look at the motion.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def contact_sheet(frames: np.ndarray, path: Path, step: int = 45, columns: int = 6) -> None:
    """Save every `step`-th frame, downscaled to half size, as a grid PNG."""
    import cv2

    picks = frames[::step]
    thumbs = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in picks]
    while len(thumbs) % columns:
        thumbs.append(np.zeros_like(thumbs[0]))
    rows = [np.hstack(thumbs[i : i + columns]) for i in range(0, len(thumbs), columns)]
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "examples" / "demo.toml")
    parser.add_argument("--sheet", type=Path, default=Path("/tmp/vortex_contact_sheet.png"))
    args = parser.parse_args()

    from vortexd import pipeline
    from vortexd.recipe import load_recipe
    from vortexd.render import render_slot
    from vortexd.settings import Settings

    recipe = load_recipe(args.recipe)
    out = Path(tempfile.mkdtemp(prefix="vortex-bench-"))
    settings = Settings(output_dir=out)
    backends = pipeline.Backends(settings)
    try:
        for label in ("cold", "warm"):
            slot = recipe.model_copy(update={"slot_id": f"{recipe.slot_id}-{label}"})
            started, cpu_started = time.perf_counter(), time.process_time()
            result = render_slot(slot, settings, out, backends=backends)
            total_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
            seconds = result.manifest["stage_seconds"]
            frames = result.manifest["video"]["frames"]
            print(f"[{label}] end to end {total_s:.2f} s for {frames} frames, {cpu_s:.2f} CPU s")
            for stage, value in seconds.items():
                print(f"    {stage:<12} {value:7.3f} s")
            print(f"    warp         {frames / seconds['warp']:7.0f} frames/s")
            print(f"    encode       {frames / seconds['encode']:7.0f} frames/s")
        from stages.encode import decode_mp4

        contact_sheet(decode_mp4(result.slot_dir / "video.mp4").frames, args.sheet)
        print(f"contact sheet: {args.sheet}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
