"""The whole daemon on one device, end to end: a real `vortexd serve` fed over its Unix socket by vortexctl.

    python3 benchmarks/gpu/daemon_run.py --out $OUT/daemon.json                 # a CUDA node (P13)
    .venv/bin/python benchmarks/gpu/daemon_run.py --device cpu --tiny --slots 1 --alone 1 --duration 2 --cadence 60

The daemon runs LivePortrait (random weights in the official layout: the release's sizes, or the
test networks with --tiny) in its arena region, the CLIP judge (two small random models, fp16 on
CUDA) in its region, espeak-ng speech on the CPU, and with --flux a tiny random Flux in its region
(run once at warm-up; the slots use the sample actor, as random Flux weights draw no face).
The actor is the built-in astronaut (its landmarks from MediaPipe, which the kit carries).

Two phases, so the overlap's cost to the warp is measured on the same daemon:
- overlap: slot k+1 is submitted the moment slot k starts warping, so its prepare stage (image,
  speech, the warp's preparation) and slot k-1's finish (verify with CLIP, remux, publish) run
  beside slot k's warp, as the daemon overlaps them at a backlog;
- alone: each slot is submitted once the one before it is published, so its warp runs alone.
Each slot's warp seconds come from its manifest (stage_seconds.warp); which other stages ran beside
each warp, and for how long, from the state events heard on the socket. Then the daemon is stopped
and started again on the same compile cache: READY cold and warm.

Prints a summary and writes every figure as JSON (--out); exits 1 when a slot did not publish or
a deadline was missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # tests.support is not in the wheel

from tests.support.daemon import DaemonProcess, StateWatcher, scrape_metrics, write_config  # noqa: E402

SCRIPT = ("Good evening. This is the director node with the latest from the network. Markets were calm "
          "today, while the weather turned bright across the coast. People gathered by the harbour to watch "
          "the boats come in, and the city prepared for a busy weekend of music and food. Maybe the best "
          "news is the simplest: the bridge reopens on Monday, and the morning commute should be quicker. "
          "We will be back with more in a moment. Stay with us.")
TERMINAL = ("published", "failed", "late", "cancelled")
MIB = 2**20


def model_settings(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Settings for the model stages, their weights written into `folder` (random, official layouts)."""
    from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints
    from tests.support.clip import write_random_clip_folder

    settings: dict[str, Any] = {"warp_backend": "liveportrait", "liveportrait_weights_dir": folder / "liveportrait",
                                "liveportrait_compile_cache_dir": folder / "inductor",
                                "liveportrait_compile": args.device.startswith("cuda")}
    budgets = {}
    if args.tiny:
        write_random_checkpoints(folder / "liveportrait", TINY, seed=0)
        settings["liveportrait_model_params"] = dataclasses.asdict(TINY)
        budgets["liveportrait"] = 256
    else:
        write_random_checkpoints(folder / "liveportrait", seed=0)
    # Two small random CLIP models: the judge's path (fp16 on CUDA, its region, its stream), not its
    # looks, so the identity floor only reports.
    write_random_clip_folder(folder / "clip", ("tiny-a", "tiny-b"))
    settings.update(verify=True, verify_backend="clip", clip_weights_dir=folder / "clip",
                    clip_models=["tiny-a", "tiny-b"], clip_min_identity=-1.0)
    if args.flux:
        from tests.support.flux import build_tiny_flux

        settings.update(image_backend="flux", flux_weights_dir=build_tiny_flux(folder / "flux"))
    if budgets:
        settings["arena_budgets_mib"] = budgets
    return settings


def write_recipe(folder: Path, index: int, args: argparse.Namespace) -> Path:
    """Recipe `index` as a JSON file in `folder` (the daemon's allowed root)."""
    recipe: dict[str, Any] = {"slot_id": f"gpu-{index}", "speech": {"text": SCRIPT, "voice": "en-us"},
                              "motion": {"seed": index, "expression": ["calm", "neutral", "excited", "manic"][index % 4]},
                              "output": {"duration_s": args.duration}}
    # No prompt even with --flux: random Flux weights draw no face, and the face gate refuses such
    # a slot. Flux is loaded into its region and runs once at the daemon's warm-up.
    path = folder / "recipes" / f"gpu-{index}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(recipe))
    return path


def submit(daemon: DaemonProcess, recipe: Path) -> None:
    """Submit through vortexctl, the operator's client, over the daemon's Unix socket."""
    done = subprocess.run([sys.executable, "-m", "vortexd.ctl", "submit", str(recipe), "--socket",
                           str(daemon.socket_path), "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"vortexctl submit {recipe.name} exited {done.returncode}: {done.stdout}{done.stderr}")


def wait_state(watcher: StateWatcher, slot_id: str, states: tuple[str, ...], timeout_s: float) -> str:
    """Wait until `slot_id` has been heard entering one of `states`; the state, or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        heard = [state for _, sid, state in list(watcher.seen) if sid == slot_id and state in states]
        if heard:
            return heard[0]
        time.sleep(0.05)
    raise TimeoutError(f"{slot_id} not in {states} after {timeout_s} s: {watcher.latest().get(slot_id)}")


def run_phases(daemon: DaemonProcess, watcher: StateWatcher, folder: Path, args: argparse.Namespace) -> dict[str, str]:
    """The overlap phase, then the alone phase; slot_id → phase."""
    limit = 4 * args.cadence + 600  # generous: a stuck slot fails the run, it does not hang the call
    phases: dict[str, str] = {}
    for i in range(args.slots):
        if i:  # the next recipe lands as the previous slot starts warping: its prepare overlaps that warp
            wait_state(watcher, f"gpu-{i - 1}", ("warping", *TERMINAL), limit)
        submit(daemon, write_recipe(folder, i, args))
        phases[f"gpu-{i}"] = "overlap"
    for i in range(args.slots, args.slots + args.alone):
        for previous in phases:
            wait_state(watcher, previous, TERMINAL, limit)
        submit(daemon, write_recipe(folder, i, args))
        phases[f"gpu-{i}"] = "alone"
    for slot_id in phases:
        wait_state(watcher, slot_id, TERMINAL, limit)
    return phases


def stage_intervals(seen: list[tuple[float, str, str]]) -> dict[str, dict[str, tuple[float, float]]]:
    """slot_id → {stage: (start, end)} from the state events (monotonic seconds), for stages that ended."""
    starts = {"preparing": "prepare", "warping": "warp", "finishing": "finish"}
    ends = {"prepared": "prepare", "warped": "warp", **{state: None for state in TERMINAL}}
    open_: dict[tuple[str, str], float] = {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for at, slot_id, state in seen:
        if state in starts:
            open_[(slot_id, starts[state])] = at
        elif state in ends:
            # A terminal state closes whatever stage of the slot was still open (finish, or a failed one).
            for stage in ([ends[state]] if ends[state] else ["prepare", "warp", "finish"]):
                if (slot_id, stage) in open_:
                    out.setdefault(slot_id, {})[stage] = (open_.pop((slot_id, stage)), at)
    return out


def beside_warp(intervals: dict[str, dict[str, tuple[float, float]]], slot_id: str) -> dict[str, float]:
    """Seconds of other slots' prepare and finish stages that ran during `slot_id`'s warp."""
    warp = intervals.get(slot_id, {}).get("warp")
    beside = {"prepare": 0.0, "finish": 0.0}
    if warp is None:
        return beside
    for other, stages in intervals.items():
        if other == slot_id:
            continue
        for stage in beside:
            if stage in stages:
                start, end = stages[stage]
                beside[stage] += max(0.0, min(end, warp[1]) - max(start, warp[0]))
    return {stage: round(seconds, 3) for stage, seconds in beside.items()}


def slot_rows(slots: list[dict], phases: dict[str, str], seen: list[tuple[float, str, str]]) -> list[dict[str, Any]]:
    """One row per slot of the run: phase, state, stage seconds, slack, what ran beside its warp."""
    intervals = stage_intervals(seen)
    rows = []
    for slot in sorted(slots, key=lambda s: s["seq"]):
        if slot["slot_id"] not in phases:
            continue
        result = slot.get("result") or {}
        seconds = result.get("stage_seconds") or {}
        rows.append({"slot_id": slot["slot_id"], "phase": phases[slot["slot_id"]], "state": slot["state"],
                     "warp_s": seconds.get("warp"), "stage_seconds": seconds,
                     "deadline_slack_s": result.get("deadline_slack_s"), "verdict_passed": result.get("verdict_passed"),
                     "beside_warp_s": beside_warp(intervals, slot["slot_id"]), "error": slot.get("error")})
    return rows


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def region_figures(status: dict[str, Any], metrics: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Each arena region's budget, use and peak (MiB) from status, with the peak /metrics reports."""
    regions = {}
    for name, figures in status.get("arena", {}).items():
        peak = figures.get("peak_bytes")
        scraped = metrics.get(f'vortex_arena_bytes{{kind="peak",region="{name}"}}')
        regions[name] = {"budget_mib": round(figures["budget_bytes"] / MIB, 1),
                         "used_mib": round(figures["used_bytes"] / MIB, 1),
                         "peak_mib": None if peak is None else round(peak / MIB, 1),
                         "metrics_peak_mib": None if scraped is None else round(scraped / MIB, 1),
                         "within_budget": None if peak is None else peak <= figures["budget_bytes"]}
    return regions


def summarise(rows: list[dict[str, Any]], stats: dict[str, Any], regions: dict, args: argparse.Namespace) -> dict:
    """The `daemon` figures of a results file."""
    # A slot of the overlap phase counts as overlapped only if another stage really ran beside its warp.
    overlapped = [r["warp_s"] for r in rows if r["phase"] == "overlap" and r["warp_s"] is not None
                  and sum(r["beside_warp_s"].values()) > 0]
    alone = [r["warp_s"] for r in rows if r["phase"] == "alone" and r["warp_s"] is not None]
    with_s, without_s = _median(overlapped), _median(alone)
    cost = None if not (with_s and without_s) else round(100 * (with_s / without_s - 1), 1)
    return {"slots": len(rows), "published": sum(r["state"] == "published" for r in rows),
            "missed": stats.get("missed_deadlines"), "late": stats.get("late"),
            "cadence_s": args.cadence, "duration_s": args.duration,
            "warp_s_with_overlap": with_s, "warp_s_without_overlap": without_s, "overlap_cost_pct": cost,
            "regions": regions, "per_slot": rows}


def start(daemon: DaemonProcess) -> float:
    """Start the daemon; seconds to READY (its log's tail on failure)."""
    try:
        return round(daemon.start(timeout_s=900), 2)
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"daemon did not become READY: {exc}") from None


def serve_and_measure(folder: Path, config: Path, args: argparse.Namespace, save) -> dict[str, Any]:
    """Start cold, run both phases, collect, stop; start again on the warm compile cache, stop.
    `save(figures)` is called with the figures so far before the warm start, and again after it."""
    daemon = DaemonProcess(folder, config)
    try:
        ready_cold_s = start(daemon)
        watcher = StateWatcher(daemon).start()
        phases = run_phases(daemon, watcher, folder, args)
        time.sleep(1.5)  # the arena gauges in /metrics are refreshed once a second
        slots = daemon.request("slots", {"limit": 1000})["result"]["slots"]
        status = daemon.request("status")["result"]
        metrics = scrape_metrics(daemon)
    finally:
        stopped = daemon.stop()
    rows = slot_rows(slots, phases, list(watcher.seen))
    figures = {**summarise(rows, status["stats"], region_figures(status, metrics), args),
               "ready_cold_s": ready_cold_s, "ready_warm_s": None, "exit_status": stopped}
    save(figures)  # a run stopped at its time cap during the warm start keeps the slots' figures
    again = DaemonProcess(folder, config)
    try:
        figures["ready_warm_s"] = start(again)
    finally:
        again.stop()
    save(figures)
    return figures


def device_name(device: str) -> str:
    """The card's name (CUDA), or the device string."""
    if not device.startswith("cuda"):
        return device
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def print_summary(result: dict[str, Any]) -> None:
    """The figures a reader wants first."""
    print(f"daemon on {result['device']}: READY cold {result['ready_cold_s']} s, warm {result['ready_warm_s']} s")
    print(f"slots {result['slots']}, published {result['published']}, missed {result['missed']}, late {result['late']}")
    for row in result["per_slot"]:
        print(f"  {row['slot_id']:<8} {row['phase']:<8} {row['state']:<10} warp {row['warp_s']} s  slack "
              f"{row['deadline_slack_s']} s  beside the warp: prepare {row['beside_warp_s']['prepare']} s, "
              f"finish {row['beside_warp_s']['finish']} s" + (f"  error {row['error']}" if row["error"] else ""))
    print(f"warp s/slot: with overlap {result['warp_s_with_overlap']}, alone {result['warp_s_without_overlap']} "
          f"(cost {result['overlap_cost_pct']} %)")
    for name, region in result["regions"].items():
        print(f"  region {name:<13} peak {region['peak_mib']} MiB of {region['budget_mib']} MiB "
              f"(/metrics {region['metrics_peak_mib']}), in use {region['used_mib']} MiB")


def main(argv: list[str] | None = None) -> int:
    """Run the daemon, write and print the figures; 1 when a slot failed or missed its deadline."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--tiny", action="store_true", help="the test networks instead of the release's sizes")
    parser.add_argument("--flux", action="store_true", help="image_backend = flux (tiny, random): loaded and run once at warm-up; slots use the sample actor")
    parser.add_argument("--slots", type=int, default=5, help="slots of the overlap phase")
    parser.add_argument("--alone", type=int, default=2, help="slots of the alone phase")
    parser.add_argument("--cadence", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of video per slot")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON) and the daemon's log beside it")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="vortex-daemon-run-"))
    config = write_config(folder, device=args.device, cadence_s=args.cadence, margin_s=2.0,
                          max_slot_frames=int(round(args.duration * 24)), arena_prefault=True, channel=False,
                          drain_timeout_s=120.0, **model_settings(folder, args))
    head = {"device": device_name(args.device), "tiny": args.tiny, "flux": args.flux}

    def save(figures: dict[str, Any]) -> None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**head, **figures}, indent=1))

    def keep_log() -> None:
        log = folder / "daemon.log"
        if args.out is not None and log.exists():
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".log").write_bytes(log.read_bytes()[-4_000_000:])

    def stopped_at_cap(signum: int, _frame: Any) -> None:
        # `timeout` (run.sh's time cap) sends SIGTERM and SIGKILL 10 s later: keep the log first.
        keep_log()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stopped_at_cap)
    try:
        result = {**head, **serve_and_measure(folder, config, args, save)}
    finally:
        keep_log()
        if args.keep:
            print(f"work folder: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print_summary(result)
    ok = result["published"] == result["slots"] and not result["missed"] and result["exit_status"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
