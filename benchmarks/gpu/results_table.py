"""README's GPU table, generated from every results file in benchmarks/results/gpu/.

    python3 benchmarks/gpu/results_table.py [--results benchmarks/results/gpu]

Prints a markdown table, one row per GPU run (oldest first): card, date, commit, LivePortrait
frames/s and peak at the shipped chunk, W/G/paste ms per frame, achieved TFLOP/s and its share of
the matmul peak measured in the same run, fidelity on CUDA, identical frames twice, READY cold/warm,
and the daemon's slots, misses and the overlap's cost to the warp. A figure the run did not
produce shows as "—".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu"
HEADER = ("card", "date", "commit", "LP frames/s", "peak MiB", "chunk", "W / G / paste ms", "TFLOP/s (% peak)",
          "fidelity", "identical", "READY cold / warm s", "daemon slots / missed", "warp s with / without overlap")
DASH = "—"


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return format(value, spec) if spec else str(value)


def row(record: dict[str, Any]) -> list[str]:
    """One table row from one results record."""
    ms = record.get("stage_ms_per_frame") or {}
    ready = record.get("ready_s") or {}
    daemon = record.get("daemon") or {}
    cost = daemon.get("overlap_cost_pct")
    return [record.get("device") or DASH, (record.get("date") or DASH)[:10], (record.get("commit") or DASH)[:10],
            _fmt(record.get("liveportrait_fps"), ".0f"), _fmt(record.get("liveportrait_peak_mib"), ".0f"),
            _fmt(record.get("chunk")),
            " / ".join(_fmt(ms.get(k), ".2f") for k in ("W", "G", "paste")),
            f"{_fmt(record.get('achieved_tflops'), '.0f')} ({_fmt(record.get('pct_of_matmul_peak'), '.0f')} %)",
            _fmt(record.get("fidelity_cuda_passed")), _fmt(record.get("identical_twice")),
            f"{_fmt(ready.get('daemon_cold'), '.0f')} / {_fmt(ready.get('daemon_warm'), '.0f')}",
            f"{_fmt(daemon.get('published'))} of {_fmt(daemon.get('slots'))} / {_fmt(daemon.get('missed'))}"
            if daemon else DASH,
            f"{_fmt(daemon.get('warp_s_with_overlap'), '.2f')} / {_fmt(daemon.get('warp_s_without_overlap'), '.2f')}"
            + (f" ({cost:+.1f} %)" if cost is not None else "") if daemon else DASH]


def table(records: list[dict[str, Any]]) -> str:
    """The markdown table of `records`, oldest run first."""
    ordered = sorted(records, key=lambda r: (r.get("date") or "", r.get("device") or ""))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(record)) + " |" for record in ordered]
    return "\n".join(lines)


def load_records(results: Path) -> list[dict[str, Any]]:
    """Every results file in `results` (the folder's README and other files are not read)."""
    return [json.loads(path.read_text()) for path in sorted(results.glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    """Print the table (a note instead when there is no results file yet)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    records = load_records(args.results)
    print(table(records) if records else f"no GPU results in {args.results} yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
