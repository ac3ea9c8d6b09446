"""The CLIP verify ensemble: FLOPs per frame, CPU time per frame, and the cost per 45 s slot.

Run from the repository root:  .venv/bin/python benchmarks/bench_clip.py [--threads 2] [--large]

1. FLOPs per image (and per caption) of ViT-B-32 and ViT-L-14 at full size, counted with
   torch.utils.flop_counter.FlopCounterMode on the meta device (matmuls and convolutions, 2 per
   MAC; no memory, no arithmetic).
2. CPU: a full-size ViT-B-32 with random weights (speed does not depend on the values) scores
   the frames the judge samples from a 45 s slot (24) against the portrait and the caption.
   `--large` also runs ViT-L-14 (about twenty times the work).
3. What the ensemble costs per slot on the GPUs from their fp16 datasheet peaks (a floor).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from stages.verify.clip.config import VIT_B_32, VIT_L_14, ClipConfig
from stages.verify.clip.judge import ClipJudge, sample_frame_indices
from stages.verify.clip.model import ClipModel

GPU_FP16_TFLOPS = {"RTX 3060": 51.0, "RTX 4090": 165.0, "H100 SXM": 990.0}
"""Dense fp16 tensor-core peaks from the datasheets (the same table as bench_liveportrait)."""
SLOT_FRAMES = 1080


def flops_per_frame(config: ClipConfig) -> tuple[int, int]:
    """(image, caption) forward FLOPs of one full-size model, counted on the meta device."""
    with torch.device("meta"):
        model = ClipModel(config)
        pixels = torch.zeros(1, 3, config.image_size, config.image_size)
        tokens = torch.zeros(1, config.context_length, dtype=torch.int64)
    counted = []
    for run in (lambda: model.encode_image(pixels), lambda: model.encode_text(tokens)):
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            run()
        counted.append(counter.get_total_flops())
    return counted[0], counted[1]


def small_tokenizer():
    """The real tokenizer over the small test merges file (the real one is not on this machine;
    a caption's cost depends only on the 77-token context, not on which ids it holds)."""
    import tempfile
    from pathlib import Path

    from stages.verify.clip.tokenizer import MERGES_FILE_NAME, ClipTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel
    from tests.support.clip import write_small_merges

    folder = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    return ClipTokenizer.from_merges_file(write_small_merges(folder / MERGES_FILE_NAME))


def time_judge(config: ClipConfig, name: str, frames: np.ndarray, portrait: np.ndarray) -> float:
    """Seconds to score a 45 s slot with one full-size random model of `config`."""
    model = ClipModel(config).eval()
    judge = ClipJudge({name: model}, small_tokenizer())
    judge.score(frames[:8], portrait)  # first call: thread pools, allocator
    started = time.perf_counter()
    scores = judge.score(frames, portrait)
    elapsed = time.perf_counter() - started
    print(f"  {name}: {elapsed:.2f} s for {scores.frames_scored} frames + portrait + caption "
          f"= {1000 * elapsed / (scores.frames_scored + 1):.0f} ms per image")
    return elapsed


def main() -> None:
    """Count, time and project; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large", action="store_true", help="also time ViT-L-14 on the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    n_scored = len(sample_frame_indices(SLOT_FRAMES))
    print(f"FLOPs (the judge scores {n_scored} frames + the portrait + one caption per model per slot)")
    slot_flops = 0
    for name, config in (("ViT-B-32", VIT_B_32), ("ViT-L-14", VIT_L_14)):
        image, caption = flops_per_frame(config)
        per_slot = (n_scored + 1) * image + caption
        slot_flops += per_slot
        print(f"  {name}: {image / 1e9:6.1f} GFLOP per image, {caption / 1e9:5.1f} GFLOP per caption, "
              f"{per_slot / 1e12:5.2f} TFLOP per slot")
    print("Projected ensemble floor per slot (fp16 peak):")
    for gpu, tflops in GPU_FP16_TFLOPS.items():
        print(f"  {gpu:<9} {1000 * slot_flops / (tflops * 1e12):6.1f} ms")

    from skimage import data

    portrait = np.ascontiguousarray(data.astronaut())
    # Slightly different frames, as a talking slot has: the portrait shifted a little per frame.
    frames = np.stack([np.roll(portrait, i % 7, axis=1) for i in range(SLOT_FRAMES)])
    print(f"CPU, {args.threads} threads, fp32, random weights:")
    time_judge(VIT_B_32, "ViT-B-32", frames, portrait)
    if args.large:
        time_judge(VIT_L_14, "ViT-L-14", frames, portrait)


if __name__ == "__main__":
    main()
