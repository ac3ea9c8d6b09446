"""Event-loop lag of a real vortexd under hostile control traffic while slots render.

    .venv/bin/python benchmarks/bench_loop_lag.py [--rate 200] [--seconds 30] [--slots 4]

A fuzzer sends `--rate` lines a second (broken JSON, unknown ops, bad recipes, status and
slots requests, random bytes) on one connection while the daemon renders `--slots` 6 s slots at
a 6 s cadence. A probe asks `health` every 50 ms on a fresh connection. Prints READY time, the
probe's round trip (p50 / p99 / max), the daemon's own loop-lag readings (its watchdog loop
measures how late it wakes), slots published and deadline misses.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from tests.support.daemon import DaemonProcess, write_config  # noqa: E402


def fuzz_lines(rng: random.Random):
    """An endless mix of hostile and ordinary request lines."""
    while True:
        kind = rng.randrange(6)
        if kind == 0:
            yield b"~" + bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ")
        elif kind == 1:
            yield b'{"op": "submit", "args": {"recipe": {"slot_id": "x", "speech": {}}}'
        elif kind == 2:
            yield json.dumps({"id": rng.random(), "op": f"op{rng.randrange(1000)}"}).encode()
        elif kind == 3:
            yield json.dumps({"op": "submit", "args": {"recipe": {"slot_id": f"f{rng.randrange(10**6)}",
                              "speech": {"text": "hi"}, "motion": {"expression": "furious"}}}}).encode()
        else:
            yield json.dumps({"op": rng.choice(["status", "slots", "health"])}).encode()


def fuzz(daemon: DaemonProcess, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Send `rate` lines a second, reading every answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket_path))
    reader = sock.makefile("rb")
    lines = fuzz_lines(random.Random(7))
    next_at = time.monotonic()
    while not stop.is_set():
        sock.sendall(next(lines) + b"\n")
        reader.readline()
        sent[0] += 1
        next_at += 1.0 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    sock.close()


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="fuzzed lines a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vortex-lag-"))
    daemon = DaemonProcess(folder, write_config(folder))
    ready_s = daemon.start()
    stop, sent = threading.Event(), [0]
    fuzzer = threading.Thread(target=fuzz, args=(daemon, args.rate, stop, sent), daemon=True)
    try:
        for i in range(args.slots):
            recipe = {"slot_id": f"lag-{i}", "speech": {"text": "Good evening from the node."},
                      "output": {"duration_s": 6}, "motion": {"seed": i}}
            assert daemon.request("submit", {"recipe": recipe})["ok"]
        fuzzer.start()
        round_trips_ms, lags_s = [], []
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            t0 = time.perf_counter()
            health = daemon.request("health")["result"]
            round_trips_ms.append(1e3 * (time.perf_counter() - t0))
            lags_s.append(health["loop_lag_s"])
            time.sleep(0.05)
        stop.set()
        fuzzer.join(5)
        slots = daemon.request("slots")["result"]["slots"]
        stats = daemon.request("status")["result"]["stats"]
    finally:
        daemon.stop()
    round_trips_ms.sort()
    p99 = round_trips_ms[int(0.99 * (len(round_trips_ms) - 1))]
    published = sum(s["state"] == "published" and s["slot_id"].startswith("lag-") for s in slots)
    print(f"READY in {ready_s:.1f} s; fuzzed {sent[0] / args.seconds:.0f} lines/s for {args.seconds:.0f} s")
    print(f"health round trip: p50 {statistics.median(round_trips_ms):.1f} ms, p99 {p99:.1f} ms, "
          f"max {round_trips_ms[-1]:.1f} ms ({len(round_trips_ms)} probes)")
    print(f"daemon loop lag (watchdog loop): max {1e3 * max(lags_s):.1f} ms, median {1e3 * statistics.median(lags_s):.1f} ms")
    print(f"slots published {published}/{args.slots}, deadline misses {stats['missed_deadlines']}")


if __name__ == "__main__":
    main()
