"""The vram arena on the host: fit check and allocation time, and proof that leasing allocates nothing.

    .venv/bin/python benchmarks/bench_arena.py [--frames 1080] [--cycles 20000] [--no-prefault]

Builds a CPU plan with two full 45 s video slabs (2 x 1080x512x512x3 uint8) plus small model
regions, times `Arena.create` (fit check, one allocation, prefault), then runs lease/release cycles
uncontended and contended (3 tasks on 2 slabs) under tracemalloc, and prints the bytes allocated
while leasing, the resident-set change, and the distinct slab addresses seen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vram import MIB, Arena, ArenaPlan, Region, SlabPool, format_bytes, slab_region_bytes  # noqa: E402


def rss_bytes() -> int:
    """Resident set size of this process now (from /proc/self/statm)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def cpu_plan(frames: int) -> ArenaPlan:
    """What the embedded (CPU) daemon would reserve: mesh-warp scratch, TTS, verify, and two slabs."""
    return ArenaPlan((Region("mesh_warp", 64 * MIB, "mesh warp chunk buffers"),
                      Region("tts", 128 * MIB, "speech buffers"),
                      Region("verify", 64 * MIB, "face-check scratch"),
                      Region("video_slabs", slab_region_bytes(2, frames, 512, 512), "2 video slabs")),
                     headroom_bytes=512 * MIB)


async def lease_cycles(pool: SlabPool, cycles: int) -> set[int]:
    """Uncontended: lease and release `cycles` times; returns the slab addresses seen."""
    seen = set()
    for k in range(cycles):
        async with pool.lease(f"slot-{k}") as slab:
            seen.add(slab.ctypes.data)
    return seen


async def contended_cycles(pool: SlabPool, cycles: int) -> tuple[set[int], float]:
    """Three tasks competing for two slabs; returns addresses seen and the mean wait per lease in µs."""
    seen: set[int] = set()
    waited_s = 0.0

    async def worker(w: int) -> None:
        nonlocal waited_s
        for k in range(cycles // 3):
            start = time.perf_counter()
            async with pool.lease(f"w{w}-{k}") as slab:
                waited_s += time.perf_counter() - start
                seen.add(slab.ctypes.data)
                await asyncio.sleep(0)

    await asyncio.gather(*(worker(w) for w in range(3)))
    return seen, 1e6 * waited_s / (3 * (cycles // 3))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1080)
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--no-prefault", action="store_true")
    args = parser.parse_args()

    plan = cpu_plan(args.frames)
    rss_start = rss_bytes()
    start = time.perf_counter()
    arena = Arena.create(plan, "cpu", prefault=not args.no_prefault)
    create_s = time.perf_counter() - start
    print(arena.budget_table())
    print(f"\nArena.create: {create_s * 1e3:.0f} ms for {format_bytes(arena.total_bytes)} "
          f"({'prefaulted' if not args.no_prefault else 'lazy pages'}), "
          f"{arena.total_bytes / create_s / 2**30:.1f} GiB/s, RSS +{format_bytes(rss_bytes() - rss_start)}")

    start = time.perf_counter()
    pool = SlabPool(arena, frames=args.frames)
    print(f"SlabPool: {pool.count} slabs of {pool.slab_shape} carved in {(time.perf_counter() - start) * 1e6:.0f} µs")

    asyncio.run(lease_cycles(pool, 100))  # warm the event loop and code paths outside the measurement
    rss_before = rss_bytes()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    start = time.perf_counter()
    seen = asyncio.run(lease_cycles(pool, args.cycles))
    uncontended_us = 1e6 * (time.perf_counter() - start) / args.cycles
    seen_contended, wait_us = asyncio.run(contended_cycles(pool, args.cycles))
    net_bytes = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    _, peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    slab_addresses = {s.ctypes.data for s in pool.slabs}
    print(f"lease+release uncontended: {uncontended_us:.1f} µs per cycle over {args.cycles} cycles")
    print(f"contended (3 tasks, 2 slabs): mean wait {wait_us:.1f} µs per lease")
    print(f"while leasing: net {net_bytes} B allocated, tracemalloc peak {format_bytes(peak_bytes)} "
          f"(one slab is {format_bytes(pool.slabs[0].nbytes)}), RSS change {format_bytes(rss_bytes() - rss_before)}")
    print(f"distinct slab addresses handed out: {len(seen | seen_contended)} "
          f"(all carved at start-up: {(seen | seen_contended) <= slab_addresses})")
    print(f"usage: {arena.usage()}")


if __name__ == "__main__":
    main()
