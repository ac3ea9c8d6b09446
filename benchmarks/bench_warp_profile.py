"""Per-step timing of the mesh warp's render loop, for bench_warp.py --profile.

The slot is rendered once more on one thread (cv2's own threads off, as in a render), with the
prepared warp's step methods wrapped in timers on the instances (the code under test is not
changed): CPU ms per frame (this thread's CPU time, so other work on the machine does not
inflate it) for every step, each nested under the step that calls it, and the
caller's own remainder as "(rest)". The sum is one core's CPU time per frame; the pipeline
runs two such threads.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

import cv2
import numpy as np

from stages.types import MotionPlan


class _Timers:
    """Inclusive seconds and call counts per step path ("mouth/blend sides")."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.order: list[str] = []
        self._stack: list[str] = []

    def wrap(self, obj: object, attr: str, label: str) -> None:
        """Replace obj.attr (a bound method) with a timed call of it, on this instance only."""
        inner: Callable = getattr(obj, attr)

        def timed(*args, **kwargs):
            path = "/".join(self._stack + [label])
            if path not in self.seconds:
                self.order.append(path)
            self._stack.append(label)
            t0 = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[path] += time.thread_time() - t0
                self.calls[path] += 1
                self._stack.pop()

        setattr(obj, attr, timed)


def _wrap_inverter(timers: _Timers, inverter, layer: str) -> None:
    timers.wrap(inverter, "invert", f"{layer} layer: inverse map")
    timers.wrap(inverter, "_iterate", "fixed-point iterations")
    timers.wrap(inverter, "_resize", "upsample to pixels")


def _instrument(prepared, timers: _Timers) -> None:
    ws = prepared._workspaces[0]
    timers.wrap(prepared, "_fill_block_fields", "node fields per layer per block")
    timers.wrap(prepared, "_copy_frame", "frame copy outside the head ROI")
    _wrap_inverter(timers, ws.base, "face")
    timers.wrap(prepared, "_remap_head", "head ROI remap")
    timers.wrap(ws.mouth, "render", "mouth")
    timers.wrap(ws.mouth, "active_area", "mouth: active area")
    for side in ("upper", "lower", "teeth"):
        _wrap_inverter(timers, getattr(ws.mouth, side), side)
    timers.wrap(ws.mouth, "_sample", "side remaps (colour + claim)")
    timers.wrap(ws.mouth, "_blend_sides", "blend sides by claims")
    timers.wrap(ws.mouth, "_paint_opening", "paint the opening")
    timers.wrap(prepared, "_draw_lids", "eyelid patches (blink frames only)")


def print_profile(prepared, plan: MotionPlan, slab: np.ndarray) -> None:
    """Render the slot on one thread with timed steps; print ms per frame for each."""
    from stages.warp.mesh.backend import BLOCK_FRAMES

    timers = _Timers()
    _instrument(prepared, timers)
    n = len(plan.jaw_open)
    ws = prepared._workspaces[0]
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        for block_start in range(0, n, BLOCK_FRAMES):
            last = min(n, block_start + BLOCK_FRAMES) - block_start
            block = prepared._blocks[0]
            prepared._fill_block_fields(block, plan, block_start, 0, last)
            prepared._render_frames(ws, block, range(0, last), block_start, slab)
    finally:
        cv2.setNumThreads(before)
    cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - t0
    thread_s = sum(s for path, s in timers.seconds.items() if "/" not in path)
    for obj in [prepared, ws.base, ws.mouth, ws.mouth.upper, ws.mouth.lower, ws.mouth.teeth]:
        for attr in [a for a in vars(obj) if callable(vars(obj)[a]) and getattr(vars(obj)[a], "__name__", "") == "timed"]:
            delattr(obj, attr)  # the instance's own methods again
    print(f"\nper step, one thread, {n} frames: {thread_s * 1e3 / n:.3f} ms of the render thread's CPU per frame,"
          f" i.e. {2 * n / thread_s:.0f} frames/s on two free cores (process CPU {cpu_s * 1e3 / n:.3f} ms,"
          f" wall {wall_s * 1e3 / n:.3f} ms per frame: the difference is other threads, e.g. BLAS's)")
    children: dict[str, float] = defaultdict(float)
    for path in timers.order:
        if "/" in path:
            children[path.rsplit("/", 1)[0]] += timers.seconds[path]
    for path in timers.order:
        depth, label = path.count("/"), path.rsplit("/", 1)[-1]
        calls = timers.calls[path]
        print(f"  {'  ' * depth}{label:<{46 - 2 * depth}} {timers.seconds[path] * 1e3 / n:7.3f} ms/frame"
              f"  ({calls} calls)")
        if path in children:
            rest = timers.seconds[path] - children[path]
            print(f"  {'  ' * (depth + 1)}{'(rest)':<{44 - 2 * depth}} {rest * 1e3 / n:7.3f} ms/frame")
