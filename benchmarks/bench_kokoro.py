"""Kokoro-82M on CPU: model preparation, worker start-up, and the real-time factor of a 45 s script.

Run from the repo root:  .venv/bin/python benchmarks/bench_kokoro.py [--workers 1,2] [--repeats 2]

Prints, for each worker count: wall seconds to synthesise the script (workers already started
and warmed up), the real-time factor (wall / audio seconds), and the CPU seconds the workers
spent per second of audio (read from /proc, so it is independent of other load on the machine).
Also prints the cold cost of assembling and patching the model into a fresh cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from stages.tts.kokoro import KokoroBackend, load_assets  # noqa: E402

# About 45 s at Kokoro's normal pace: six paragraphs a presenter might read on air.
SCRIPT = """Good evening, and welcome back. Tonight we travel to a small harbour town where the
fishing boats still leave before dawn, and the market opens at seven sharp.

Doctor Maria Lopez has lived here since 1999. She says the town has changed, but not its
rhythm: people still bring bread, fish and flowers from the villages nearby, and they still
stop to talk.

"Patience is a quiet kind of courage," her father used to tell her. She did not understand
him until much later, when a storm closed the harbour for nine days.

Last year the town counted 3,200 visitors, almost twice as many as in 2015. Most people
here think that is a good thing.

Tomorrow at 6:30 a.m., the first boat will leave again. We will be on it."""


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def bench_preparation() -> None:
    """Cold assembly + graph patch into an empty cache, then the warm (cached) path."""
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        load_assets(cache_dir=Path(cache))
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        load_assets(cache_dir=Path(cache))
        warm_s = time.perf_counter() - start
    print(f"model preparation: cold (assemble 92 MB + patch) {cold_s:.2f} s, cached {warm_s:.2f} s")


def bench_workers(workers: int, repeats: int, voice: str) -> None:
    """Start-up and RTF of the script with `workers` worker processes."""
    with KokoroBackend(workers=workers) as backend:
        start = time.perf_counter()
        backend.warm_up()
        startup_s = time.perf_counter() - start
        runner = backend._get_runner()
        best_s, cpu_s, speech = float("inf"), 0.0, None
        for _ in range(repeats):
            cpu_before = _cpu_seconds(runner.pids)
            start = time.perf_counter()
            speech = backend.synthesize(SCRIPT, voice=voice)
            elapsed = time.perf_counter() - start
            if elapsed < best_s:
                best_s, cpu_s = elapsed, _cpu_seconds(runner.pids) - cpu_before
        audio_s = speech.duration_s
        print(f"workers={workers}: start-up + warm-up {startup_s:.2f} s | {audio_s:.1f} s of speech "
              f"({len(speech.phonemes)} phonemes) in {best_s:.2f} s wall → RTF {best_s / audio_s:.3f}, "
              f"worker CPU {cpu_s / audio_s:.3f} s per audio second")


def main() -> None:
    """Parse arguments and run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count (best is kept)")
    parser.add_argument("--voice", default="kokoro:jf_alpha")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    bench_preparation()
    for workers in (int(w) for w in args.workers.split(",")):
        bench_workers(workers, args.repeats, args.voice)


if __name__ == "__main__":
    main()
