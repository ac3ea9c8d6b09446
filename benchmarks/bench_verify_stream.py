"""Verify beside the warp: what is left to check after a 45 s slot's last chunk, against verify_slot after the warp.

Run from the repository root:  .venv/bin/python benchmarks/bench_verify_stream.py [--recipe examples/demo.toml]

The slot is the demo recipe (45 s, 1080 frames at 512², espeak-ng speech) rendered with the mesh
warp in the pipeline's chunks (settings.warp_chunk_frames). Three ways to verify it, one warp each:
  after   today: the warp, then verify_slot on the finished slab;
  inline  a StreamingVerifier fed each chunk from the warp's on_chunk hook, on the warp's thread;
  thread  the same verifier on a worker thread, fed chunk ranges through a queue while the warp goes on.
Prints, per way: warp wall time, verifier time spent during the warp, and the time from the last
chunk warped to the verdict (for "after", verify_slot's whole time); then whether the three verdicts
agree in every field but verify_s.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from stages.verify import StreamingVerifier, verify_slot  # noqa: E402
from vortexd import pipeline  # noqa: E402
from vortexd.recipe import parse_recipe, read_recipe_file  # noqa: E402
from vortexd.settings import Settings  # noqa: E402
from vortexd.slot import HeldSlab, Slot  # noqa: E402
from vortexd.slot_runner import SlotRunner  # noqa: E402


def prepared_slot(recipe_path: Path, output_dir: Path) -> tuple[pipeline.Backends, Slot]:
    """The recipe's slot through the prepare stage (image, speech, motion), holding a slab."""
    settings = Settings(output_dir=output_dir)
    backends = pipeline.Backends(settings)
    recipe = parse_recipe(read_recipe_file(recipe_path), recipe_path.parent)
    slot = Slot(recipe.slot_id, 0, recipe, lease=HeldSlab(pipeline.allocate_slab(recipe.output.n_frames)))
    slot.prepared = SlotRunner(settings, backends, output_dir).prepare(slot)
    return backends, slot


def warp(backends: pipeline.Backends, slot: Slot, on_chunk=lambda start, stop: None) -> float:
    """Warp every frame of the slot into its slab; the wall seconds."""
    started = time.perf_counter()
    pipeline.warp_frames(backends, slot.prepared.actor, slot.prepared.plan, slot.frames, on_chunk=on_chunk)
    return time.perf_counter() - started


def after(backends: pipeline.Backends, slot: Slot) -> tuple[dict, object]:
    """Today: the warp, then verify_slot on the whole slab."""
    warp_s = warp(backends, slot)
    started = time.perf_counter()
    verdict = verify_slot(slot.frames, slot.prepared.speech, slot.prepared.plan.fps)
    left_s = time.perf_counter() - started
    return {"warp_s": warp_s, "during_warp_s": 0.0, "left_after_last_chunk_s": left_s}, verdict


def inline(backends: pipeline.Backends, slot: Slot) -> tuple[dict, object]:
    """The verifier on the warp's thread, fed from on_chunk."""
    frames, speech, fps = slot.frames, slot.prepared.speech, slot.prepared.plan.fps
    verifier = StreamingVerifier(speech, fps, len(frames))
    spent = {"add_s": 0.0}

    def on_chunk(start: int, stop: int) -> None:
        began = time.perf_counter()
        verifier.add_frames(frames[start:stop], start)
        spent["add_s"] += time.perf_counter() - began
        spent["last_add_s"] = time.perf_counter() - began

    warp_s = warp(backends, slot, on_chunk)
    started = time.perf_counter()
    verdict = verifier.verdict()
    verdict_s = time.perf_counter() - started
    # The last chunk's checks ran after it was warped, on the same thread: they are left over too.
    return {"warp_s": warp_s, "during_warp_s": spent["add_s"] - spent["last_add_s"],
            "left_after_last_chunk_s": spent["last_add_s"] + verdict_s, "verdict_call_s": verdict_s}, verdict


def threaded(backends: pipeline.Backends, slot: Slot) -> tuple[dict, object]:
    """The verifier on a worker thread, fed chunk ranges through a queue as the warp lands them."""
    frames, speech, fps = slot.frames, slot.prepared.speech, slot.prepared.plan.fps
    verifier = StreamingVerifier(speech, fps, len(frames))
    chunks: queue.Queue = queue.Queue()

    def work() -> None:
        while (chunk := chunks.get()) is not None:
            verifier.add_frames(frames[chunk[0] : chunk[1]], chunk[0])

    worker = threading.Thread(target=work, name="verify")
    worker.start()
    warp_s = warp(backends, slot, lambda start, stop: chunks.put((start, stop)))
    started = time.perf_counter()
    chunks.put(None)
    worker.join()
    verdict = verifier.verdict()
    return {"warp_s": warp_s, "during_warp_s": None, "left_after_last_chunk_s": time.perf_counter() - started}, verdict


def main() -> None:
    """Parse arguments, run the three ways, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO_ROOT / "examples" / "demo.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backends, slot = prepared_slot(args.recipe.resolve(), Path(tmp))
        print(f"{len(slot.frames)} frames {slot.frames.shape[2]}x{slot.frames.shape[1]} @ {slot.prepared.plan.fps} fps, "
              f"warp chunks of {backends.settings.warp_chunk_frames}")
        warp(backends, slot)  # first-call costs (caches, page faults) out of the way
        verdicts = {}
        for name, way in (("after", after), ("inline", inline), ("thread", threaded)):
            figures, verdict = way(backends, slot)
            verdicts[name] = {k: v for k, v in verdict.as_dict().items() if k != "verify_s"}
            shown = "  ".join(f"{k} {v:.3f}" for k, v in figures.items() if v is not None)
            print(f"{name:7s} {shown}  verify_s {verdict.verify_s:.3f}  passed {verdict.passed}")
        same = all(v == verdicts["after"] for v in verdicts.values())
        print(f"verdicts identical (all fields but verify_s): {same}; av window {verdicts['after']['av_window_frames']}")


if __name__ == "__main__":
    main()
