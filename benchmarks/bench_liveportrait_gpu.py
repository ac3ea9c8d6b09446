"""LivePortrait on a GPU through the real backend and engine, full-size random weights.

Run from the repository root (on a CUDA machine; elsewhere it says so and exits 0):

    python benchmarks/bench_liveportrait_gpu.py [--chunks auto,8,16] [--slots 3] [--profile] [--json out.json]

Prints, per chunk size: frames/s and seconds per 1080-frame slot, peak memory (weights
included) and its drift over slots; then ms/frame of W, G and paste-back (CUDA events), the
achieved TFLOP/s against a fp16 matmul peak measured in the same run, the fp16-vs-fp32 frame
difference (TF32 off), start-up cold and warm (the compiler's cache), and with --profile the top
kernels with their input shapes. Weights are random with realistic statistics: speed and memory
do not depend on the values. The actor is the built-in astronaut; its landmarks come from
MediaPipe, or from --landmarks (an .npy made where MediaPipe runs; see benchmarks/gpu/).
With --json every figure is also written there (benchmarks/gpu/collect.py reads it); the slots
rendered at each chunk size are hashed, and `identical_twice` says whether they came out the same.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stages.types import Actor, MotionPlan
from stages.warp.liveportrait.backend import DEFAULT_BUDGET_BYTES, LivePortraitBackend
from stages.warp.liveportrait.engine import ChunkEngine, EngineOptions
from stages.warp.liveportrait.pasteback import paste
from stages.warp.liveportrait.random_weights import write_random_checkpoints

SLOT_FRAMES = 1080
FP_COMPARE_FRAMES = 96
GIB = 2**30
CURVES = ("jaw_open", "lip_width", "lip_round", "lips_closed", "blink", "eye_wide", "brow", "smile",
          "head_yaw_deg", "head_pitch_deg", "head_roll_deg", "shift_x_px", "shift_y_px")


def speaking_plan(n: int) -> MotionPlan:
    """Mouth, blinks and head motion that change every frame (speed does not depend on them)."""
    t = np.arange(n) / 24.0
    curves = {k: np.zeros(n, np.float32) for k in CURVES}
    curves.update(jaw_open=0.5 + 0.5 * np.sin(9 * t), blink=(np.arange(n) % 96 < 4) * 1.0,
                  head_yaw_deg=6 * np.sin(0.7 * t), head_pitch_deg=3 * np.sin(1.1 * t), smile=0.3)
    return MotionPlan(fps=24, **{k: np.asarray(v, np.float32) for k, v in curves.items()})


def astronaut(landmarks: Path | None) -> Actor:
    """The built-in sample portrait as an actor."""
    if landmarks is None:
        from stages.image import load_actor

        return load_actor()
    from skimage import data

    image = np.ascontiguousarray(data.astronaut())
    return Actor(image, np.load(landmarks), np.eye(2, 3), "builtin:astronaut", "bench")


def events_ms(fn, repeats: int = 10) -> float:
    """Mean milliseconds of fn() on the GPU, by CUDA events, after one warm-up call."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def matmul_peak_tflops() -> float:
    """Dense fp16 matmul rate of this card, measured now (8192³, the ceiling we compare against)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    ms = events_ms(lambda: a @ b, repeats=20)
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def flops_per_frame() -> float:
    """W + G + paste FLOPs of one frame, counted on the meta device (bench_liveportrait.py's count)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_liveportrait import meta_networks, step_profile

    return float(step_profile(meta_networks(), 1, half=False).flops)


def slot_run(backend: LivePortraitBackend, actor: Actor, slots: int) -> dict[str, float]:
    """Render `slots` whole slots; frames/s of the last, peak memory, allocation drift."""
    prepared = backend.prepare(actor)
    plan, slab = speaking_plan(SLOT_FRAMES), np.zeros((SLOT_FRAMES, 512, 512, 3), np.uint8)
    prepared.prepare_motion(plan)  # the prepare stage's share: the timed renders are the warp's alone
    prepared.render(plan, slice(0, backend.engine.chunk_frames), slab)  # compile + capture, if not yet
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    allocated, seconds, digests = [], 0.0, set()
    for _ in range(slots):
        start = time.perf_counter()
        prepared.render(plan, slice(0, SLOT_FRAMES), slab)
        seconds = time.perf_counter() - start
        allocated.append(torch.cuda.memory_allocated())
        digests.add(hashlib.sha256(slab).hexdigest())  # after the timing: hashing is not the warp's
    return {"fps": SLOT_FRAMES / seconds, "slot_s": seconds, "peak_gib": torch.cuda.max_memory_allocated() / GIB,
            "drift_bytes": allocated[-1] - allocated[0], "identical": len(digests) == 1}


def stage_ms(backend: LivePortraitBackend) -> dict[str, float]:
    """ms per frame of W, G and paste-back at the backend's chunk, fp16 as served (compiled if so)."""
    engine = backend.engine
    b = engine.chunk_frames
    warping, spade = engine._nets
    f_s, x_s = engine.f_s.expand(b, -1, -1, -1, -1), engine.x_s.expand(b, -1, -1)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        warped = warping(f_s, kp_driving=engine.kp_driving, kp_source=x_s)["out"]
        images = spade(warped)
        return {"W": events_ms(lambda: warping(f_s, kp_driving=engine.kp_driving, kp_source=x_s)) / b,
                "G": events_ms(lambda: spade(warped)) / b,
                "paste": events_ms(lambda: paste(images, engine.grid, engine.mask, engine.background,
                                                 engine.frames)) / b}


def fp16_vs_fp32(backend: LivePortraitBackend, actor: Actor) -> np.ndarray:
    """|fp16 − fp32| grey levels over FP_COMPARE_FRAMES frames (fp32 engine eager, TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    prepared = backend.prepare(actor)
    plan = speaking_plan(FP_COMPARE_FRAMES)
    prepared.prepare_motion(plan)
    half = np.zeros((FP_COMPARE_FRAMES, 512, 512, 3), np.uint8)
    prepared.render(plan, slice(0, FP_COMPARE_FRAMES), half)
    full = np.zeros_like(half)
    fp32 = ChunkEngine(backend.networks.warping, backend.networks.spade, backend.device, backend._feature_shape,
                       backend.config.warping_module_params.num_kp, (512, 512),
                       EngineOptions(backend.engine.chunk_frames))
    backend.engine, served = fp32, backend.engine
    try:
        prepared.render(plan, slice(0, FP_COMPARE_FRAMES), full)
    finally:
        backend.engine = served
    return np.abs(half.astype(np.int16) - full.astype(np.int16))


def startup_s(weights: Path, cache: Path, chunk: str) -> float:
    """Seconds to build the backend and run its first step, in a fresh process (so cold or warm
    depends only on the compiler's cache folder)."""
    code = ("import sys,time,torch;t=time.perf_counter();"
            "from stages.warp.liveportrait.backend import LivePortraitBackend as B;"
            f"b=B({str(weights)!r},'cuda',{None if chunk == 'auto' else int(chunk)},compile_cache_dir={str(cache)!r});"
            "b.engine.step();torch.cuda.synchronize();print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def kernel_profile(backend: LivePortraitBackend, top: int = 15) -> str:
    """The top kernels of a few eager fp16 steps, by CUDA time, with their input shapes."""
    from torch.profiler import ProfilerActivity, profile

    engine = ChunkEngine(backend.networks.warping, backend.networks.spade, backend.device, backend._feature_shape,
                         backend.config.warping_module_params.num_kp, (512, 512),
                         EngineOptions(backend.engine.chunk_frames, half=True))
    engine.step()
    with profile(activities=[ProfilerActivity.CUDA], record_shapes=True) as prof:
        for _ in range(4):
            engine.step()
        torch.cuda.synchronize()
    return prof.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=top)


def chunk_table(args: argparse.Namespace, work: Path, actor: Actor, flops: float, peak_tflops: float,
                rows: list[dict], save) -> LivePortraitBackend:
    """Run every chunk size of --chunks, print its row, append it to `rows` and `save()`; the
    shipped ("auto") backend."""
    print(f"{'chunk':>6}{'frames/s':>10}{'s/slot':>8}{'peak GiB':>10}{'drift B':>9}{'TFLOP/s':>9}{'% peak':>8}")
    shipped = None
    for chunk in args.chunks.split(","):
        # An explicit chunk is measured whatever it needs: its region is the whole card; "auto"
        # fits the chunk to the served budget.
        budget = DEFAULT_BUDGET_BYTES if chunk == "auto" else torch.cuda.mem_get_info()[1]
        backend = LivePortraitBackend(work / "weights", "cuda", None if chunk == "auto" else int(chunk),
                                      compile=not args.no_compile, compile_cache_dir=work / "inductor",
                                      budget_bytes=budget)
        r = slot_run(backend, actor, args.slots)
        achieved = r["fps"] * flops / 1e12
        label = f"{backend.engine.chunk_frames}" + ("*" if chunk == "auto" else "")
        print(f"{label:>6}{r['fps']:10.0f}{r['slot_s']:8.2f}{r['peak_gib']:10.2f}{r['drift_bytes']:9d}"
              f"{achieved:9.0f}{100 * achieved / peak_tflops:7.0f}%")
        rows.append({"chunk": backend.engine.chunk_frames, "auto": chunk == "auto", "fps": round(r["fps"], 1),
                     "slot_s": round(r["slot_s"], 3), "peak_mib": round(r["peak_gib"] * 1024, 1),
                     "drift_bytes": r["drift_bytes"], "tflops": round(achieved, 1),
                     "pct_of_matmul_peak": round(100 * achieved / peak_tflops, 1), "identical_twice": r["identical"]})
        save()
        if shipped is None or chunk == "auto":
            shipped = backend
    print("* chosen from the budget and the memory measured at start-up")
    return shipped


def main(argv: list[str] | None = None) -> int:
    """Print the report (and write it as JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", default="auto,8,16", help="chunk sizes to run ('auto': from the budget)")
    parser.add_argument("--slots", type=int, default=3, help="slots per chunk size (drift is over these)")
    parser.add_argument("--landmarks", type=Path, help="astronaut landmarks .npy (where MediaPipe is absent)")
    parser.add_argument("--no-compile", action="store_true", help="eager fp16 + graph, as before P6")
    parser.add_argument("--profile", action="store_true", help="print the top kernels of the eager step")
    parser.add_argument("--no-startup", action="store_true", help="skip start-up cold/warm (two compiles; the "
                        "daemon run of benchmarks/gpu measures READY cold and warm)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_liveportrait_gpu: no CUDA device visible to torch; nothing to measure here.")
        return 0
    torch.backends.cudnn.benchmark = False
    actor = astronaut(args.landmarks)
    work = Path(tempfile.mkdtemp(prefix="lp-gpu-"))
    write_random_checkpoints(work / "weights")
    peak_tflops, flops = matmul_peak_tflops(), flops_per_frame()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  fp16 matmul peak {peak_tflops:.0f} TFLOP/s  "
          f"work {flops / 1e12:.3f} TFLOP/frame  budget {DEFAULT_BUDGET_BYTES / GIB:.2f} GiB")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "matmul_peak_tflops": round(peak_tflops, 1), "tflop_per_frame": flops / 1e12,
              "budget_mib": DEFAULT_BUDGET_BYTES / 2**20, "compile": not args.no_compile}

    def save() -> None:  # after each part: a step stopped at its time cap keeps what it measured
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=1))

    report["chunks"] = []
    served = chunk_table(args, work, actor, flops, peak_tflops, report["chunks"], save)
    ms = stage_ms(served)
    print("per frame at chunk {}: W {W:.2f} ms, G {G:.2f} ms, paste {paste:.3f} ms".format(
        served.engine.chunk_frames, **ms))
    diff = fp16_vs_fp32(served, actor)
    print(f"fp16 vs fp32 over {FP_COMPARE_FRAMES} frames: mean {diff.mean():.2f}, p99 {np.percentile(diff, 99):.0f}, "
          f"max {diff.max()} grey levels; fp32 re-renders {served.fp32_rerenders}")
    report.update(stage_ms_per_frame={k: round(v, 4) for k, v in ms.items()}, stage_chunk=served.engine.chunk_frames,
                  fp16_vs_fp32={"frames": FP_COMPARE_FRAMES, "mean": round(float(diff.mean()), 3),
                                "p99": float(np.percentile(diff, 99)), "max": int(diff.max()),
                                "fp32_rerenders": served.fp32_rerenders})
    save()
    if not (args.no_compile or args.no_startup):
        cache = work / "startup-cache"
        cold, warm = startup_s(work / "weights", cache, "auto"), startup_s(work / "weights", cache, "auto")
        print(f"start-up (build + compile + capture + first step): cold {cold:.1f} s, warm cache {warm:.1f} s")
        report["startup_s"] = {"cold": round(cold, 2), "warm": round(warm, 2)}
        save()
    if args.profile:
        report["profile_top"] = kernel_profile(served)
        print(report["profile_top"])
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
