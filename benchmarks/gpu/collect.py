"""One results file per GPU run: the figures the kit's scripts wrote under $OUT, gathered into
`benchmarks/results/gpu/<date>-<card>.json` (issue P13's fields).

    python3 benchmarks/gpu/collect.py RUN_FOLDER [RUN_FOLDER ...] [--results benchmarks/results/gpu]

RUN_FOLDER is where a device call's files landed here (the reply's files_at): `steps.tsv` (each
step of run.sh: name, exit status, seconds), `meta.json` (commit, date, nvidia-smi's line),
`liveportrait.json` (bench_liveportrait_gpu.py --json), `overlap.json` (bench_overlap_gpu.py
--json) and `daemon.json` (daemon_run.py). The two calls of the kit may land in two folders:
name both. What a run did not produce is recorded as null, never guessed. Prints the file written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu"
FIDELITY_STEPS = ("fidelity", "fidelity-inference")
"""run.sh's names for the two fidelity checks on CUDA (as loaded, and as the engine runs W and G)."""


def read_steps(folder: Path) -> dict[str, dict[str, float]]:
    """run.sh's steps.tsv: step name → {rc, seconds}."""
    path = folder / "steps.tsv"
    if not path.is_file():
        return {}
    steps = {}
    for line in path.read_text().splitlines():
        name, rc, seconds = line.split("\t")
        steps[name] = {"rc": int(rc), "seconds": float(seconds)}
    return steps


def read_json(folders: list[Path], name: str) -> dict[str, Any] | None:
    """The last of the folders' `name` files, parsed; None when no folder has one."""
    found = None
    for folder in folders:
        if (folder / name).is_file():
            found = json.loads((folder / name).read_text())
    return found


def card_slug(device: str) -> str:
    """A file-name form of the card's name: 'NVIDIA H100 80GB HBM3' → 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "unknown"


def passed(steps: dict[str, dict[str, float]], names: tuple[str, ...]) -> bool | None:
    """True when every named step ran and exited 0; None when none of them ran."""
    ran = [steps[name]["rc"] for name in names if name in steps]
    if not ran:
        return None
    return len(ran) == len(names) and all(rc == 0 for rc in ran)


def liveportrait_fields(lp: dict[str, Any] | None) -> dict[str, Any]:
    """The warp's fields, from bench_liveportrait_gpu.py's report at the shipped (auto) chunk."""
    if lp is None:
        return dict.fromkeys(("liveportrait_fps", "liveportrait_peak_mib", "chunk", "chunks", "stage_ms_per_frame",
                              "achieved_tflops", "matmul_peak_tflops", "pct_of_matmul_peak", "fp16_vs_fp32",
                              "identical_twice", "liveportrait_startup_s"))
    rows = lp.get("chunks") or []
    shipped = next((row for row in rows if row.get("auto")), rows[0] if rows else {})
    return {"liveportrait_fps": shipped.get("fps"), "liveportrait_peak_mib": shipped.get("peak_mib"),
            "chunk": shipped.get("chunk"), "chunks": rows, "stage_ms_per_frame": lp.get("stage_ms_per_frame"),
            "achieved_tflops": shipped.get("tflops"), "matmul_peak_tflops": lp.get("matmul_peak_tflops"),
            "pct_of_matmul_peak": shipped.get("pct_of_matmul_peak"), "fp16_vs_fp32": lp.get("fp16_vs_fp32"),
            "identical_twice": all(row.get("identical_twice") for row in rows) if rows else None,
            "liveportrait_startup_s": lp.get("startup_s")}


def collect(folders: list[Path]) -> dict[str, Any]:
    """The results record of one GPU run from its folders (see the module docstring)."""
    steps: dict[str, dict[str, float]] = {}
    for folder in folders:
        steps.update(read_steps(folder))
    meta = read_json(folders, "meta.json") or {}
    lp = read_json(folders, "liveportrait.json")
    daemon = read_json(folders, "daemon.json")
    device = (lp or {}).get("device") or (daemon or {}).get("device") or meta.get("device") or "unknown"
    record = {"commit": meta.get("commit"), "date": meta.get("date"), "device": device,
              "torch": (lp or {}).get("torch") or meta.get("torch"), **liveportrait_fields(lp),
              "fidelity_cuda_passed": passed(steps, FIDELITY_STEPS), "pytest_gpu_passed": passed(steps, ("pytest-gpu",)),
              "ready_s": {"daemon_cold": (daemon or {}).get("ready_cold_s"),
                          "daemon_warm": (daemon or {}).get("ready_warm_s")},
              "overlap_bench": read_json(folders, "overlap.json"), "steps": steps}
    if daemon is not None:
        daemon = {key: value for key, value in daemon.items() if key not in ("device", "ready_cold_s", "ready_warm_s")}
    record["daemon"] = daemon
    return record


def write_record(record: dict[str, Any], results: Path) -> Path:
    """Write `record` as `<date>-<card>.json` in `results` (a second run the same day gets -2, -3, …)."""
    results.mkdir(parents=True, exist_ok=True)
    stem = f"{(record.get('date') or 'undated')[:10]}-{card_slug(record['device'])}"
    path, n = results / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = results / f"{stem}-{n}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Collect the named run folders into one results file; prints its path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    missing = [str(folder) for folder in args.folders if not folder.is_dir()]
    if missing:
        parser.error(f"not a folder: {', '.join(missing)}")
    print(write_record(collect(args.folders), args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
