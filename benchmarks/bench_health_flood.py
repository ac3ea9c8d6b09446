"""Operators are never locked out of `health`: a connection flood against a real vortexd.

    .venv/bin/python benchmarks/bench_health_flood.py [--rate 40] [--probes 40] [--interval 0.25]
    .venv/bin/python benchmarks/bench_health_flood.py --hold 72 --rate 7    # 72 held, each one reopened
    .venv/bin/python benchmarks/bench_health_flood.py --socket /run/vortexd/control.sock   # a running daemon

A flood process (a different peer from this one) opens --rate connections a second and holds them
silent (with --hold N it keeps at most N open and reopens each one the daemon closes), while this
process sends --probes `health` requests, one every --interval seconds, each on a fresh connection,
and every tenth probe also a `slots` request (another client's ordinary work). Prints the health
probes answered ok out of those sent, their p50/p99/max latency, the `slots` requests answered, and
what the flood's connections were told (e.g. `busy` naming `max_connections_per_peer`).

`--flood-only SOCKET` runs just the flood and prints its outcome as one JSON line (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import math
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support is not in the wheel

from vortexd.control.client import ControlClient  # noqa: E402


def _answer_kind(line: bytes) -> str:
    """How the daemon answered one flood connection: "busy:<limit>", an error code, or "ok"."""
    try:
        message = json.loads(line)
        error = message.get("error") or {}
    except (ValueError, AttributeError):
        return "not_json"
    if message.get("ok"):
        return "ok"
    if error.get("code") == "busy":
        return f"busy:{(error.get('details') or {}).get('limit', '?')}"
    return str(error.get("code"))


class _Flood:
    """Connections opened at a steady rate and held silent; records what each one is told."""

    def __init__(self, path: str, rate: float, hold: int | None) -> None:
        self.path, self.rate, self.hold = path, rate, hold
        self.selector = selectors.DefaultSelector()
        self.answers: dict[socket.socket, bytearray] = {}
        self.outcome: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def open_one(self) -> None:
        """Open one more connection (unless --hold connections are open already)."""
        if self.hold is not None and len(self.answers) >= self.hold:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(self.path)
        except OSError as exc:
            self.outcome[f"connect_failed:{type(exc).__name__}"] += 1
            sock.close()
            return
        sock.setblocking(False)
        self.answers[sock] = bytearray()
        self.selector.register(sock, selectors.EVENT_READ)
        self.outcome["opened"] += 1

    def read_one(self, sock: socket.socket) -> None:
        """Take what the daemon sent on `sock`; classify its first line; forget it once closed."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.outcome[f"error:{type(exc).__name__}"] += 1  # e.g. reset: counted, then forgotten
            data = b""
        buffer = self.answers[sock]
        if data and not buffer.count(b"\n"):
            buffer += data
            if b"\n" in buffer:
                line = bytes(buffer[:buffer.index(b"\n")])
                kind = _answer_kind(line)
                self.outcome[kind] += 1
                self.examples.setdefault(kind, line.decode(errors="replace")[:300])
        if not data:
            if b"\n" not in buffer:
                self.outcome["closed_without_answer"] += 1
            self.selector.unregister(sock)
            del self.answers[sock]
            sock.close()

    def run(self, seconds: float) -> dict[str, Any]:
        """Flood for `seconds`, then close everything; the outcome counts and one example of each."""
        started = time.monotonic()
        next_open = started
        while (now := time.monotonic()) < started + seconds:
            if now >= next_open:
                next_open += 1.0 / self.rate
                self.open_one()
            for key, _ in self.selector.select(timeout=max(0.0, min(next_open - time.monotonic(), 0.05))):
                self.read_one(key.fileobj)  # type: ignore[arg-type]
        self.outcome["held_at_end"] = len(self.answers)
        for sock in list(self.answers):
            sock.close()
        return {"outcome": dict(self.outcome), "examples": self.examples}


def start_flood(path: Path | str, rate: float, seconds: float, hold: int | None = None) -> subprocess.Popen:
    """The flood in its own process (so it is another peer than the caller); JSON on its stdout."""
    command = [sys.executable, __file__, "--flood-only", str(path), "--rate", str(rate),
               "--seconds", str(seconds)]
    if hold is not None:
        command += ["--hold", str(hold)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def percentile_ms(latencies_s: list[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0..100) of the latencies, in milliseconds."""
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)
    return round(1000 * ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)


def _one_request(path: Path | str, op: str) -> tuple[str, float]:
    """("ok" or what went wrong, seconds) for one request on a fresh connection."""
    started = time.perf_counter()
    try:
        with ControlClient(path, timeout_s=5.0).connect() as client:
            answer = client.request(op)
    except OSError as exc:  # DaemonUnavailable and ProtocolViolation are ConnectionErrors
        return type(exc).__name__, time.perf_counter() - started
    outcome = "ok" if answer.get("ok") else str(answer.get("error", {}).get("code"))
    return outcome, time.perf_counter() - started


def probe(path: Path | str, count: int, interval_s: float) -> dict[str, Any]:
    """`count` health requests one every `interval_s` (and `slots` every tenth): what was answered."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    slots: Counter[str] = Counter()
    started = time.monotonic()
    for i in range(count):
        outcome, seconds = _one_request(path, "health")
        if outcome == "ok":
            latencies.append(seconds)
        else:
            failures[outcome] += 1
        if i % 10 == 5:
            slots[_one_request(path, "slots")[0]] += 1
        time.sleep(max(0.0, started + (i + 1) * interval_s - time.monotonic()))
    return {"answered": len(latencies), "probes": count, "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99), "max_ms": percentile_ms(latencies, 100),
            "failures": dict(failures), "slots": dict(slots)}


def _measure(path: Path | str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the flood and the probes together against the socket at `path`."""
    seconds = args.probes * args.interval + 1.0
    flood = start_flood(path, args.rate, seconds, args.hold)
    time.sleep(0.5)  # the flood is on before the first probe
    probes = probe(path, args.probes, args.interval)
    out, _ = flood.communicate(timeout=seconds + 30)
    return {**probes, "flood": json.loads(out)}


def main() -> None:
    """Parse the options, run the flood (or the whole measurement) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=40.0, help="flood connections opened per second")
    parser.add_argument("--hold", type=int, default=None, help="keep at most this many flood connections open")
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between health probes")
    parser.add_argument("--socket", type=Path, default=None, help="a running daemon's socket (default: start one)")
    parser.add_argument("--flood-only", metavar="SOCKET", default=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="with --flood-only: how long to flood")
    args = parser.parse_args()
    if args.flood_only:
        print(json.dumps(_Flood(args.flood_only, args.rate, args.hold).run(args.seconds)), flush=True)
        return
    if args.socket is not None:
        result = _measure(args.socket, args)
    else:
        from tests.support.daemon import DaemonProcess, write_config

        with tempfile.TemporaryDirectory(prefix="vx-flood-") as folder:
            daemon = DaemonProcess(Path(folder), write_config(Path(folder)))
            daemon.start()
            try:
                result = _measure(daemon.socket_path, args)
            finally:
                daemon.stop()
    print(f"health under a flood of {args.rate:g} connections/s"
          + (f" (at most {args.hold} held, reopened)" if args.hold else " (held silent)")
          + f": {result['answered']}/{result['probes']} answered ok, p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; failures {result['failures']}")
    print(f"other client's slots requests: {result['slots']}")
    print(f"flood: {result['flood']['outcome']}")
    for kind, example in result["flood"]["examples"].items():
        print(f"  {kind}: {example}")


if __name__ == "__main__":
    main()
