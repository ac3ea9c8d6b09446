"""Mesh-warp throughput: frames/s rendering a 45 s slot (1080 frames at 512²) on this machine.

Run from the repository root:  .venv/bin/python benchmarks/bench_warp.py [--frames N] [--actor PATH] [--raw]
    [--profile] [--save PATH | --compare PATH]

The motion plan is synthetic but speech-like (a syllable-rate jaw, blinks, lip closures, slow
head motion), generated from a fixed seed, so runs are comparable. Prints prepare time,
frames/s and CPU seconds (process time, all threads) for the whole slot and per 96-frame
chunk, and the peak traced allocation during a chunk render (it should be tiny: the render
loop writes into preallocated buffers). On a shared machine wall-clock frames/s follow the
load; CPU seconds per slot are the steadier figure.

--profile renders the slot once more on one thread with every step timed (ms per frame, steps
nested under the step that calls them; see bench_warp_profile.py). --save writes the slot's
frames to a raw .npy file; --compare reads one back and prints the max / mean absolute pixel
difference and the PSNR of this render against it (how a speed change moves the picture).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from stages.types import Actor, MotionPlan


def speechlike_plan(n_frames: int, fps: int = 24, seed: int = 7) -> MotionPlan:
    """A deterministic plan with the rhythm of speech: syllables, closures, blinks, head drift."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps

    def smooth_noise(scale_s: float, amp: float) -> np.ndarray:
        knots = rng.normal(0.0, amp, int(n_frames / (scale_s * fps)) + 3)
        return np.interp(t / scale_s, np.arange(len(knots)), knots)

    jaw = np.clip(0.45 + 0.45 * np.sin(2 * np.pi * 4.0 * t + smooth_noise(1.0, 1.5)), 0, 1)
    closed = (np.sin(2 * np.pi * 0.9 * t + 1.0) > 0.93).astype(float)
    blink = np.zeros(n_frames)
    for start in np.arange(int(1.7 * fps), n_frames, int(3.3 * fps)):
        blink[start:start + 5] = np.array([0.4, 0.9, 1.0, 0.7, 0.3])[: len(blink[start:start + 5])]
    curves = dict(jaw_open=jaw, lip_width=np.clip(smooth_noise(0.6, 0.4), -1, 1),
                  lip_round=np.clip(smooth_noise(0.8, 0.4), 0, 1), lips_closed=closed, blink=blink,
                  eye_wide=np.clip(smooth_noise(3.0, 0.3), 0, 1), brow=np.clip(smooth_noise(2.0, 0.4), -1, 1),
                  smile=np.clip(0.3 + smooth_noise(4.0, 0.2), 0, 1), head_yaw_deg=smooth_noise(2.5, 5.0),
                  head_pitch_deg=smooth_noise(2.0, 3.0), head_roll_deg=smooth_noise(3.0, 1.5),
                  shift_x_px=smooth_noise(3.0, 3.0), shift_y_px=smooth_noise(3.0, 2.0))
    return MotionPlan(fps=fps, **{k: np.asarray(v, np.float32) for k, v in curves.items()})


def load_actor(path: str | None, raw: bool) -> Actor:
    """The actor as a slot gets it (stages.image.load_actor: the portrait framed around its face,
    the built-in sample by default), or with `raw` the whole picture as it is (centre-cropped to
    512²): a smaller head, so a smaller warp region — what this benchmark measured before it
    used the slot's own framing, and why it read about twice the pipeline's frames/s."""
    if not raw:
        from stages.image import load_actor as slot_actor

        return slot_actor(image=path)
    import cv2

    from stages.image.face import detect_landmarks

    if path is None:
        from skimage import data

        image, source = data.astronaut(), "builtin:astronaut"
    else:
        bgr = cv2.imread(path)
        h, w = bgr.shape[:2]
        side = min(h, w)
        crop = bgr[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        image = np.ascontiguousarray(cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        source = path
    return Actor(image, detect_landmarks(image), np.eye(2, 3), source, "bench")


def main() -> None:
    """Measure and print."""
    from stages.warp.mesh import MeshWarpBackend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1080)
    parser.add_argument("--actor", default=None, help="portrait path (default: built-in astronaut)")
    parser.add_argument("--raw", action="store_true",
                        help="the picture as it is, not framed around the face as a slot's actor is")
    parser.add_argument("--profile", action="store_true", help="also print ms per frame for each step")
    parser.add_argument("--save", metavar="PATH", help="write the rendered slot to PATH (.npy)")
    parser.add_argument("--compare", metavar="PATH", help="compare the rendered slot with a saved one")
    args = parser.parse_args()

    actor = load_actor(args.actor, args.raw)
    t0 = time.perf_counter()
    prepared = MeshWarpBackend().prepare(actor)
    prepare_s = time.perf_counter() - t0
    plan = speechlike_plan(args.frames)
    slab = np.empty((args.frames, 512, 512, 3), np.uint8)
    t0 = time.perf_counter()
    prepared.render(plan, slice(0, args.frames), slab)
    cold_s = time.perf_counter() - t0  # includes the kernel mapping the fresh slab's pages

    slot_s, slot_cpu_s = [], []
    for _ in range(3):  # the best of three: other work on the machine only ever slows a run
        t0, c0 = time.perf_counter(), time.process_time()
        prepared.render(plan, slice(0, args.frames), slab)  # a reused slab, as the daemon's are
        slot_s.append(time.perf_counter() - t0)
        slot_cpu_s.append(time.process_time() - c0)

    chunk_fps = []
    for start in range(0, args.frames - 95, 96):
        t0 = time.perf_counter()
        prepared.render(plan, slice(start, start + 96), slab)
        chunk_fps.append(96 / (time.perf_counter() - t0))

    tracemalloc.start()
    prepared.render(plan, slice(0, min(96, args.frames)), slab)
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    roi = prepared.roi
    print(f"machine           {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work skews this)")
    print(f"actor             {actor.source}  (head ROI {roi.w}×{roi.h} px)")
    print(f"prepare           {prepare_s * 1e3:.0f} ms")
    print(f"slot, fresh slab  {args.frames} frames in {cold_s:.2f} s = {args.frames / cold_s:.0f} frames/s")
    print(f"slot, reused slab {args.frames} frames in {min(slot_s):.2f} s = {args.frames / min(slot_s):.0f} frames/s"
          f" (best of 3; runs {', '.join(f'{s:.2f}' for s in slot_s)} s)")
    print(f"slot CPU time     {min(slot_cpu_s):.2f} s per {args.frames} frames (process time, both threads;"
          f" runs {', '.join(f'{s:.2f}' for s in slot_cpu_s)} s)")
    if chunk_fps:
        print(f"96-frame chunks   median {np.median(chunk_fps):.0f} frames/s (min {min(chunk_fps):.0f})")
    print(f"traced peak alloc {peak_bytes / 1024:.1f} KiB during a 96-frame chunk")
    prepared.render(plan, slice(0, args.frames), slab)
    if args.save:
        np.save(args.save, slab)
        print(f"saved             {args.save}")
    if args.compare:
        print_difference(slab, np.load(args.compare, mmap_mode="r"), args.compare)
    if args.profile:
        from bench_warp_profile import print_profile

        print_profile(prepared, plan, slab)


def print_difference(slab: np.ndarray, reference: np.ndarray, name: str) -> None:
    """Max and mean absolute pixel difference and PSNR of `slab` against `reference`."""
    if reference.shape != slab.shape:
        raise SystemExit(f"{name} holds {reference.shape}, this render {slab.shape}")
    worst, total, squared, frames = 0, 0, 0, 0
    for k in range(len(slab)):  # frame by frame: two whole slabs as int16 would not fit memory
        d = np.abs(slab[k].astype(np.int16) - reference[k].astype(np.int16))
        worst, total, squared = max(worst, int(d.max())), total + int(d.sum()), squared + int((d.astype(np.int64) ** 2).sum())
        frames += int(d.any())
    mse = squared / slab.size
    psnr = "inf (identical)" if mse == 0 else f"{10 * np.log10(255.0**2 / mse):.1f} dB"
    print(f"vs {name}: max |diff| {worst}, mean |diff| {total / slab.size:.5f}, PSNR {psnr},"
          f" {frames}/{len(slab)} frames differ")


if __name__ == "__main__":
    main()
