"""Mesh warp before/after in one process: CPU ms per frame of an older tree's warp and this one's.

Run from the repository root:
    git archive <commit> | tar -x -C /tmp/before      # the tree to compare against
    .venv/bin/python benchmarks/bench_warp_ab.py /tmp/before [--after /tmp/after] [--frames 512] [--passes 5]

(--after: another unpacked tree instead of this checkout, e.g. to leave out others' work in
progress.)

On a machine shared with other work, two benchmark processes run one after the other see
different loads, and a few per cent of difference drowns in it. Here both warps are prepared
in one process (the older tree's `stages` package imported under another name) and render the
same speech-like plan block by block, alternately (which goes first alternates too), on one
thread as a render thread does; each block's CPU time is kept at its minimum over the passes,
and the sum of those minima is the figure least moved by other work. Also printed: each pass's
totals and the largest pixel difference between the two renders (0 for a speed change that
keeps the bytes).
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench_warp import load_actor, speechlike_plan

BLOCK = 32


def import_tree(tree: Path, name: str, into: Path):
    """A tree's mesh warp package: its `stages` copied to `into` as package `name`, imports
    rewritten to match."""
    dst = into / name
    shutil.copytree(tree / "stages", dst)
    rewrites = [(re.compile(r"\bstages\."), f"{name}."), (re.compile(r"^import stages\b", re.M), f"import {name}"),
                (re.compile(r"\bfrom stages import\b"), f"from {name} import")]
    for path in dst.rglob("*.py"):
        text = path.read_text()
        for pattern, repl in rewrites:
            text = pattern.sub(repl, text)
        path.write_text(text)
    if str(into) not in sys.path:
        sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.warp.mesh")


def render_block(prepared, plan, start: int, out: np.ndarray) -> float:
    """Render the block of frames at `start` on this thread; its CPU seconds."""
    last = min(len(plan.jaw_open), start + BLOCK) - start
    c0 = time.thread_time()
    block = prepared._blocks[0]
    prepared._fill_block_fields(block, plan, start, 0, last)
    prepared._render_frames(prepared._workspaces[0], block, range(0, last), start, out)
    return time.thread_time() - c0


def compare(warps: dict, plan, passes: int) -> tuple[dict, dict, dict]:
    """Alternate the warps block by block for `passes` passes: (per-pass totals, per-block
    minima, slabs)."""
    n = len(plan.jaw_open)
    slabs = {k: np.zeros((n, 512, 512, 3), np.uint8) for k in warps}
    totals = {k: [] for k in warps}
    minima = {k: {} for k in warps}
    for p in range(passes):
        pass_s = dict.fromkeys(warps, 0.0)
        for start in range(0, n, BLOCK):
            order = list(warps) if (start // BLOCK + p) % 2 == 0 else list(warps)[::-1]
            for k in order:
                seconds = render_block(warps[k], plan, start, slabs[k])
                pass_s[k] += seconds
                minima[k][start] = min(minima[k].get(start, np.inf), seconds)
        for k in warps:
            totals[k].append(pass_s[k])
    return totals, minima, slabs


def main() -> None:
    """Measure and print."""
    from stages.warp.mesh import MeshWarpBackend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="an unpacked older tree (git archive <commit> | tar -x -C DIR)")
    parser.add_argument("--after", type=Path, help="an unpacked tree to measure instead of this checkout")
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # as in a render: one thread per frame
    actor = load_actor(None, False)
    with tempfile.TemporaryDirectory() as tmp:  # kept while the older tree may still import
        after = import_tree(args.after, "stages_after", Path(tmp)).MeshWarpBackend if args.after else MeshWarpBackend
        before = import_tree(args.before, "stages_before", Path(tmp)).MeshWarpBackend
        warps = {"before": before().prepare(actor), "after": after().prepare(actor)}
        totals, minima, slabs = compare(warps, speechlike_plan(args.frames), args.passes)
    n = args.frames
    for k in warps:
        runs = ", ".join(f"{s * 1e3 / n:.3f}" for s in totals[k])
        print(f"{k:<7} CPU ms/frame, one thread, per pass: {runs}")
    best = {k: sum(v.values()) * 1e3 / n for k, v in minima.items()}
    print(f"sum of per-block minima: before {best['before']:.3f} ms/frame ({1e3 / best['before']:.0f} frames/s"
          f" per core), after {best['after']:.3f} ms/frame ({1e3 / best['after']:.0f} frames/s per core),"
          f" after/before {best['after'] / best['before']:.3f}")
    ratios = ", ".join(f"{a / b:.3f}" for a, b in zip(totals["after"], totals["before"]))
    print(f"after/before per pass: {ratios}")
    worst = max(int(np.abs(slabs["before"][i].astype(np.int16) - slabs["after"][i]).max()) for i in range(n))
    print(f"largest pixel difference between the renders: {worst}")


if __name__ == "__main__":
    main()
