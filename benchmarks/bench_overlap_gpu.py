"""What the daemon's overlap costs the warp on one GPU (issue P8).

Run from the repository root on a CUDA machine (elsewhere it says so and exits 0):

    python benchmarks/bench_overlap_gpu.py [--landmarks astronaut.npy] [--slots 2] [--json out.json]

The warp (LivePortrait, full-size random weights, in its arena region with the high-priority
stream, chunk from the region) renders 1080-frame slots alone, then while the verify stage of the
neighbouring slot runs beside it (the CLIP ensemble, full-size random ViT-B-32 + ViT-L-14, in its
own region and stream, scoring slots back to back in another thread), as the daemon overlaps them.
Prints the warp's frames/s both ways and the cost, each region's peak against its budget, and the
device's free memory; with --json also as JSON (benchmarks/gpu/collect.py keeps it in the run's
results file). Image generation is not part of the overlap measured here: a random-weight Flux
draws no face, and the full-size model's weights are not at hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

SLOT_FRAMES = 1080


def _arena():
    from vram import MIB, Arena, ArenaPlan, slab_region_bytes

    plan = ArenaPlan.from_budgets({"liveportrait": 3584 * MIB, "clip": 1280 * MIB,
                                   "video_slabs": slab_region_bytes(2, SLOT_FRAMES, 512, 512)},
                                  pools={"liveportrait", "clip"})
    return Arena.create(plan, "cuda:0")


def _judge(arena):
    from stages.verify.clip.config import VIT_B_32, VIT_L_14
    from stages.verify.clip.judge import ClipJudge

    sys.path.insert(0, str(Path(__file__).parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel
    from bench_clip import small_tokenizer
    from tests.support.clip import random_clip_model

    region = arena.stage_pool("clip")
    with region:
        models = {name: random_clip_model(config).to("cuda:0", torch.float16).eval()
                  for name, config in (("ViT-B-32", VIT_B_32), ("ViT-L-14", VIT_L_14))}
    return ClipJudge(models, small_tokenizer(), device="cuda:0", memory=region)


def _warp_fps(prepared, plan, slab, slots: int) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(slots):
        prepared.render(plan, slice(0, SLOT_FRAMES), slab)
    torch.cuda.synchronize()
    return slots * SLOT_FRAMES / (time.perf_counter() - started)


def _warp_fps_beside_verify(prepared, plan, slab, slots: int, judge, frames, portrait) -> tuple[float, int]:
    """The warp's frames/s while another thread verifies slots back to back; and how many it verified."""
    stop, scored = threading.Event(), []

    def verify_beside() -> None:
        while not stop.is_set():
            judge.score(frames, portrait)
            scored.append(1)

    beside = threading.Thread(target=verify_beside, daemon=True)
    beside.start()
    try:
        return _warp_fps(prepared, plan, slab, slots), len(scored)
    finally:
        stop.set()
        beside.join()


def main(argv: list[str] | None = None) -> int:
    """Measure and print; 0 also when there is no GPU."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landmarks", type=Path, help="astronaut landmarks .npy (where MediaPipe is missing)")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure here")
        return 0
    from bench_liveportrait_gpu import astronaut, speaking_plan

    from stages.warp.liveportrait.backend import LivePortraitBackend
    from stages.warp.liveportrait.random_weights import write_random_checkpoints

    arena = _arena()
    weights = Path(tempfile.mkdtemp(prefix="lp-"))
    write_random_checkpoints(weights, seed=0)
    warp = LivePortraitBackend(weights, device="cuda", chunk_frames=None,
                               memory=arena.stage_pool("liveportrait", high_priority=True))
    actor = astronaut(args.landmarks)
    prepared, plan = warp.prepare(actor), speaking_plan(SLOT_FRAMES)
    slab = arena.view("video_slabs", (SLOT_FRAMES, 512, 512, 3), np.uint8, "warp")
    prepared.render(plan, slice(0, warp.engine.chunk_frames), slab)  # compile and capture
    judge = _judge(arena)
    frames = np.random.default_rng(0).integers(0, 255, (SLOT_FRAMES, 512, 512, 3), np.uint8)
    judge.score(frames[:48], actor.image)

    alone = _warp_fps(prepared, plan, slab, args.slots)
    together, scored = _warp_fps_beside_verify(prepared, plan, slab, args.slots, judge, frames, actor.image)
    print(f"warp chunk {warp.engine.chunk_frames}: alone {alone:.0f} frames/s, with verify beside {together:.0f} "
          f"frames/s ({100 * (1 - together / alone):.1f} % slower); {scored} slots verified meanwhile")
    regions = {}
    for region, peak in arena.peaks().items():
        budget = arena.plan.region(region).budget_bytes
        used = arena.usage()[region].used_bytes
        print(f"region {region}: peak {peak / 2**20:.0f} MiB of {budget / 2**20:.0f} MiB, in use {used / 2**20:.0f} MiB")
        regions[region] = {"peak_mib": round(peak / 2**20, 1), "budget_mib": round(budget / 2**20, 1),
                           "used_mib": round(used / 2**20, 1)}
    print(f"device free: {torch.cuda.mem_get_info()[0] / 2**30:.1f} GiB")
    if args.json is not None:
        args.json.write_text(json.dumps({"chunk": warp.engine.chunk_frames, "warp_fps_alone": round(alone, 1),
                                         "warp_fps_beside_verify": round(together, 1),
                                         "cost_pct": round(100 * (1 - together / alone), 1),
                                         "slots_verified_beside": scored, "regions": regions}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())
