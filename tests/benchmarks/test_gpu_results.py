"""The GPU kit's bookkeeping on made-up but well-formed run files (no GPU figure is made here):
run folders → one results file with P13's fields → README's markdown table; and how the daemon
run tells which stages ran beside each slot's warp."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

GPU_KIT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gpu_kit_{name}", GPU_KIT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


collect, results_table, daemon_run = _load("collect"), _load("results_table"), _load("daemon_run")

# A made-up run: slot a warps 10–14 s while b prepares (11–13 s); b warps 14–17 s beside a's finish
# (14–15 s); c (alone phase) warps 30–32 s with nothing beside it.
EVENTS = [(t, sid, st) for t, sid, st in (
    (0.0, "a", "queued"), (1.0, "a", "preparing"), (9.0, "a", "prepared"), (10.0, "a", "warping"),
    (11.0, "b", "preparing"), (13.0, "b", "prepared"), (14.0, "a", "warped"), (14.0, "a", "finishing"),
    (14.0, "b", "warping"), (15.0, "a", "published"), (17.0, "b", "warped"), (17.0, "b", "finishing"),
    (18.0, "b", "published"), (20.0, "c", "preparing"), (29.0, "c", "prepared"), (30.0, "c", "warping"),
    (32.0, "c", "warped"), (32.0, "c", "finishing"), (33.0, "c", "published"))]


def _slot(seq: int, slot_id: str, warp_s: float) -> dict:
    return {"seq": seq, "slot_id": slot_id, "state": "published",
            "result": {"stage_seconds": {"warp": warp_s}, "deadline_slack_s": 3.0, "verdict_passed": True}}


def _daemon_figures() -> dict:
    rows = daemon_run.slot_rows([_slot(0, "a", 4.4), _slot(1, "b", 3.3), _slot(2, "c", 2.0)],
                                {"a": "overlap", "b": "overlap", "c": "alone"}, EVENTS)
    stats = {"missed_deadlines": 0, "late": 0}
    regions = {"liveportrait": {"budget_mib": 3584.0, "used_mib": 900.0, "peak_mib": 3100.0,
                                "metrics_peak_mib": 3100.0, "within_budget": True}}
    args = argparse.Namespace(cadence=15.0, duration=45.0)
    return {"device": "Made-up Card 80GB", "ready_cold_s": 95.0, "ready_warm_s": 21.0, "exit_status": 0,
            **daemon_run.summarise(rows, stats, regions, args)}


def _run_folder(folder: Path, fidelity_rc: int = 0, with_daemon: bool = True) -> Path:
    folder.mkdir(parents=True)
    steps = [("nvidia-smi", 0, 0.1), ("fidelity", fidelity_rc, 20.0), ("fidelity-inference", 0, 22.0),
             ("pytest-gpu", 0, 60.0), ("bench-liveportrait", 0, 200.0)]
    (folder / "steps.tsv").write_text("".join(f"{n}\t{rc}\t{s}\n" for n, rc, s in steps))
    (folder / "meta.json").write_text(json.dumps({"commit": "0123456789abcdef", "date": "2026-12-09T10:00:00Z"}))
    lp = {"device": "Made-up Card 80GB", "torch": "2.11.0+cu130", "matmul_peak_tflops": 700.0,
          "chunks": [{"chunk": 8, "auto": True, "fps": 150.0, "slot_s": 7.2, "peak_mib": 3200.0, "tflops": 90.0,
                      "pct_of_matmul_peak": 12.9, "identical_twice": True},
                     {"chunk": 16, "auto": False, "fps": 170.0, "slot_s": 6.35, "peak_mib": 5900.0, "tflops": 102.0,
                      "pct_of_matmul_peak": 14.6, "identical_twice": True}],
          "stage_ms_per_frame": {"W": 3.1, "G": 2.9, "paste": 0.2},
          "fp16_vs_fp32": {"frames": 96, "mean": 0.4, "p99": 2.0, "max": 9, "fp32_rerenders": 0},
          "startup_s": {"cold": 80.0, "warm": 12.0}}
    (folder / "liveportrait.json").write_text(json.dumps(lp))
    if with_daemon:
        (folder / "daemon.json").write_text(json.dumps(_daemon_figures()))
    return folder


def test_what_ran_beside_each_warp_comes_from_the_state_events() -> None:
    """a's warp had b's prepare beside it for 2 s; b's warp had a's finish for 1 s; c's had nothing."""
    intervals = daemon_run.stage_intervals(EVENTS)
    assert intervals["a"]["warp"] == (10.0, 14.0) and intervals["a"]["finish"] == (14.0, 15.0)
    assert daemon_run.beside_warp(intervals, "a") == {"prepare": 2.0, "finish": 0.0}
    assert daemon_run.beside_warp(intervals, "b") == {"prepare": 0.0, "finish": 1.0}
    assert daemon_run.beside_warp(intervals, "c") == {"prepare": 0.0, "finish": 0.0}


def test_the_overlap_cost_compares_overlapped_warps_with_warps_alone() -> None:
    """Median warp of the overlapped slots (a 4.4, b 3.3 → 3.85 s) against the slot alone (2.0 s)."""
    figures = _daemon_figures()
    assert figures["warp_s_with_overlap"] == 3.85 and figures["warp_s_without_overlap"] == 2.0
    assert figures["overlap_cost_pct"] == 92.5
    assert figures["slots"] == figures["published"] == 3 and figures["missed"] == 0


def test_a_run_folder_becomes_one_results_file_with_the_issue_fields(tmp_path: Path) -> None:
    """The shipped (auto) chunk's row gives frames/s, peak and chunk; steps give fidelity and pytest;
    the daemon's figures and READY times land under their names; the file is <date>-<card>.json."""
    record = collect.collect([_run_folder(tmp_path / "run")])
    assert (record["liveportrait_fps"], record["liveportrait_peak_mib"], record["chunk"]) == (150.0, 3200.0, 8)
    assert record["fidelity_cuda_passed"] is True and record["pytest_gpu_passed"] is True
    assert record["identical_twice"] is True and record["achieved_tflops"] == 90.0
    assert record["ready_s"] == {"daemon_cold": 95.0, "daemon_warm": 21.0}
    assert record["daemon"]["overlap_cost_pct"] == 92.5 and "device" not in record["daemon"]
    path = collect.write_record(record, tmp_path / "results")
    assert path.name == "2026-12-09-made-up-card-80gb.json"
    assert json.loads(path.read_text())["commit"] == "0123456789abcdef"
    assert collect.write_record(record, tmp_path / "results").name == "2026-12-09-made-up-card-80gb-2.json"


def test_a_failed_check_and_a_missing_daemon_run_are_recorded_not_guessed(tmp_path: Path) -> None:
    """fidelity exiting 1 is a failure; no daemon.json leaves the daemon and its READY times null."""
    record = collect.collect([_run_folder(tmp_path / "run", fidelity_rc=1, with_daemon=False)])
    assert record["fidelity_cuda_passed"] is False and record["daemon"] is None
    assert record["ready_s"] == {"daemon_cold": None, "daemon_warm": None}
    cells = results_table.row(record)
    assert cells[8] == "**no**" and cells[-1] == cells[-2] == results_table.DASH


def test_two_call_folders_are_merged(tmp_path: Path) -> None:
    """The warp checks from the first call's folder, the daemon from the second's."""
    first = _run_folder(tmp_path / "one", with_daemon=False)
    second = tmp_path / "two"
    second.mkdir()
    (second / "steps.tsv").write_text("daemon\t0\t300.0\n")
    (second / "daemon.json").write_text(json.dumps(_daemon_figures()))
    record = collect.collect([first, second])
    assert record["liveportrait_fps"] == 150.0 and record["daemon"]["published"] == 3
    assert set(record["steps"]) >= {"fidelity", "daemon"}


def test_the_table_has_a_row_per_results_file_oldest_first(tmp_path: Path) -> None:
    """Every results file is a row, sorted by date, with the figures formatted for README."""
    results = tmp_path / "results"
    newer = collect.collect([_run_folder(tmp_path / "new")])
    older = {**newer, "date": "2026-11-01T08:00:00Z", "liveportrait_fps": 120.0}
    for record in (newer, older):
        collect.write_record(record, results)
    (results / "README.md").write_text("not a results file")
    lines = results_table.table(results_table.load_records(results)).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| card | date |")
    assert "| 2026-11-01 |" in lines[2] and "| 120 |" in lines[2] and "| 150 |" in lines[3]
    assert "| 3.10 / 2.90 / 0.20 |" in lines[3] and "| 90 (13 %) |" in lines[3]
    assert "| 3 of 3 / 0 |" in lines[3] and "3.85 / 2.00 (+92.5 %)" in lines[3]


@pytest.mark.parametrize("device, slug", [("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"), ("", "unknown")])
def test_card_names_become_file_names(device: str, slug: str) -> None:
    """The card's name, lowercased, with every other character run as one dash."""
    assert collect.card_slug(device) == slug
