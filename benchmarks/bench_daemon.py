"""Sustained cadence: N consecutive slots through a real vortexd at the 45 s cadence.

    .venv/bin/python benchmarks/bench_daemon.py [--slots 5] [--cadence 45] [--duration 45] [--voice en-us]
    .venv/bin/python benchmarks/bench_daemon.py --liveportrait tiny --cadence 10 --duration 8   # LP in its region
    python3 benchmarks/bench_daemon.py --liveportrait full --device cuda --no-verify           # a GPU node

Prints cold start to READY, per-slot deadline slack (min / median), misses, the first segment's
latency after each warp started, what the live channel aired (slots, fillers), and the daemon's CPU
utilisation over the run (user+system CPU seconds of the daemon and its worker processes,
divided by wall time and core count). With --liveportrait the warp is LivePortrait in its arena
region, from the official release's folder or from random weights written in the official layout
(tiny: the test networks; full: the release's sizes), and the arena's regions (budget, use, peak)
are printed after the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from tests.support.daemon import DaemonProcess, write_config  # noqa: E402
from tests.support.slots import liveportrait_settings  # noqa: E402

SCRIPT = ("Good evening. This is the director node with the latest from the network. Markets were calm "
          "today, while the weather turned bright across the coast. People gathered by the harbour to watch "
          "the boats come in, and the city prepared for a busy weekend of music and food. Maybe the best "
          "news is the simplest: the bridge reopens on Monday, and the morning commute should be quicker. "
          "We will be back with more in a moment. Stay with us.")


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    """User+system CPU of `pid` and its live children (the Kokoro workers), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1] is the parent pid
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / ticks


def _print_arena(arena: dict) -> None:
    for region, figures in arena.items():
        peak = figures.get("peak_bytes")
        print(f"region {region:<13} {figures.get('kind', '?'):<5} budget {figures['budget_bytes'] / 2**20:8.1f} MiB  "
              f"in use {figures['used_bytes'] / 2**20:8.1f} MiB" + (f"  peak {peak / 2**20:8.1f} MiB" if peak else ""))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=5)
    parser.add_argument("--cadence", type=float, default=45.0)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--voice", default="en-us")
    parser.add_argument("--liveportrait", metavar="WEIGHTS",
                        help="warp with LivePortrait: tiny / full random weights, or the official release's folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-verify", action="store_true", help="skip the verify stage (no MediaPipe on the node)")
    parser.add_argument("--no-channel", action="store_true", help="no live channel (and no filler at start-up)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="vortex-cadence-"))
    frames = int(round(args.duration * 24))
    extra = liveportrait_settings(folder, args.liveportrait) if args.liveportrait else {}
    daemon = DaemonProcess(folder, write_config(folder, cadence_s=args.cadence, max_slot_frames=frames,
                                                arena_prefault=True, margin_s=2.0, device=args.device,
                                                verify=not args.no_verify, channel=not args.no_channel,
                                                kokoro_warm_up=args.voice.startswith("kokoro:"), **extra))
    ready_s = daemon.start(timeout_s=300)
    print(f"cold start to READY: {ready_s:.2f} s")
    cpu_before, wall_before = _cpu_seconds(daemon.process.pid), time.monotonic()
    try:
        for i in range(args.slots):
            recipe = {"slot_id": f"bench-{i}", "speech": {"text": SCRIPT, "voice": args.voice},
                      "motion": {"seed": i, "expression": ["calm", "neutral", "excited", "manic"][i % 4]},
                      "output": {"duration_s": args.duration}}
            answer = daemon.request("submit", {"recipe": recipe})
            assert answer["ok"], answer
            # Recipes arrive one per cadence, as a director node sends them.
            if i < args.slots - 1:
                time.sleep(args.cadence)
        deadline = time.monotonic() + 4 * args.cadence
        while time.monotonic() < deadline:
            slots = daemon.request("slots", {"limit": 1000})["result"]["slots"]
            if all(s["state"] in ("published", "failed", "late", "cancelled") for s in slots):
                break
            time.sleep(0.5)
        wall_s = time.monotonic() - wall_before
        cpu_s = _cpu_seconds(daemon.process.pid) - cpu_before
        slots = daemon.request("slots", {"limit": 1000})["result"]["slots"]
        status = daemon.request("status")["result"]
        stats = status["stats"]
    finally:
        daemon.stop()
    _print_arena(status["arena"])
    slack = [s["result"]["deadline_slack_s"] for s in slots if s["state"] == "published"]
    print(f"slots: {len(slots)}  published: {len(slack)}  late: {stats['late']}  "
          f"missed deadlines: {stats['missed_deadlines']}")
    for s in sorted(slots, key=lambda s: s["seq"]):
        seconds = (s.get("result") or {}).get("stage_seconds", {})
        print(f"  {s['slot_id']:<10} {s['state']:<10} slack {(s.get('result') or {}).get('deadline_slack_s')} s  "
              + " ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    if slack:
        print(f"deadline slack: min {min(slack):.2f} s, median {statistics.median(slack):.2f} s")
    print(f"daemon CPU: {cpu_s:.1f} s over {wall_s:.1f} s wall = {100 * cpu_s / wall_s / os.cpu_count():.0f}% "
          f"of {os.cpu_count()} cores")
    _print_stream(folder / "out", slots, status.get("channel"))


def _print_stream(out: Path, slots: list[dict], channel: dict | None) -> None:
    """First segment readable after each slot's warp started, and what the channel aired."""
    import json

    first = [json.loads((out / s["slot_id"] / "manifest.json").read_text()).get("first_segment_s")
             for s in slots if (out / s["slot_id"] / "manifest.json").is_file()]
    first = [value for value in first if value is not None]
    if first:
        print(f"first segment after warp start: min {min(first):.3f} s, median {statistics.median(first):.3f} s, "
              f"max {max(first):.3f} s")
    if channel:
        print(f"channel: slots aired {channel['slots_aired']}, fillers aired {channel['fillers_aired']}, "
              f"window {channel['window_segments']} segments / {channel['window_duration_s']} s")


if __name__ == "__main__":
    main()
