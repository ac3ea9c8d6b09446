"""Whole-process `vortexd render` of the demo slot: wall, CPU seconds and stage seconds, source trees alternated.

    .venv/bin/python benchmarks/bench_render_cli.py [--runs 3] [TREE ...]

Each TREE is a source tree of this repository (default: this checkout), for instance an older
commit unpacked with `git archive <commit> | tar -x -C /tmp/before`; its `vortexd` runs with
this checkout's virtual environment. Runs alternate between the trees (before, after, before,
...), so a machine whose load drifts hurts each tree alike; on a shared machine compare the CPU
seconds (user + sys of the whole process, every thread) as well as the wall time. Prints each
run, then per tree the median wall (with its range), CPU, user and sys seconds and the median
of each manifest `stage_seconds` entry.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def render_once(tree: Path, recipe: Path, out: Path) -> dict:
    """One `python -m vortexd.cli render` from `tree` (its modules first on the path): its figures."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vortexd.cli", "render", str(recipe), "-o", str(out), "--quiet"],
                          cwd=tree, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"render from {tree} failed:\n{done.stderr[-2000:]}")
    manifest = json.loads(next(out.glob("*/manifest.json")).read_text())
    user_s, sys_s = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"wall": wall_s, "cpu": user_s + sys_s, "user": user_s, "sys": sys_s, "stages": manifest["stage_seconds"]}


def summary(tree: Path, runs: list[dict]) -> str:
    """One line: medians of the runs of `tree`."""
    walls = [run["wall"] for run in runs]
    median = {key: statistics.median(run[key] for run in runs) for key in ("wall", "cpu", "user", "sys")}
    stages = {key: statistics.median(run["stages"].get(key, 0.0) for run in runs) for key in runs[0]["stages"]}
    return (f"{tree}: median wall {median['wall']:.2f} s ({min(walls):.2f}–{max(walls):.2f}), CPU {median['cpu']:.2f} s "
            f"(user {median['user']:.2f}, sys {median['sys']:.2f}) | "
            + " ".join(f"{key} {value:.2f}" for key, value in stages.items()))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[REPO])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipe", type=Path, default=REPO / "examples" / "demo.toml")
    args = parser.parse_args()
    results: dict[Path, list[dict]] = {tree: [] for tree in args.trees}
    scratch = Path(tempfile.mkdtemp(prefix="vortex-bench-render-"))
    try:
        for _ in range(args.runs):
            for index, tree in enumerate(args.trees):
                run = render_once(tree.resolve(), args.recipe.resolve(), scratch / str(index))
                results[tree].append(run)
                print(f"{tree}: wall {run['wall']:.2f} s, CPU {run['cpu']:.2f} s (user {run['user']:.2f}, "
                      f"sys {run['sys']:.2f}) | " + " ".join(f"{k} {v:.2f}" for k, v in run["stages"].items()),
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for tree, runs in results.items():
        print(summary(tree, runs))


if __name__ == "__main__":
    main()
