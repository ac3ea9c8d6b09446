"""Prometheus metrics, the shipped alert rules and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from stages.errors import StageInputError
from vortexd.metrics import Metrics, MetricsOptions

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METRIC_NAME = re.compile(r"\bvortex_[a-z0-9_]+")


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, keyed by (name, sorted labels)."""
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """The value of one sample of the exposition."""
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def observed() -> Metrics:
    """A Metrics instance after one of each kind of observation."""
    m = Metrics(MetricsOptions(version="0.1.0"))
    m.observe_stage("warp", 12.5)
    m.observe_stage("warp", 7.5)
    m.observe_stage("tts", 0.2)
    m.observe_published(end_to_end_s=70.0, deadline_slack_s=12.0, published_unix_s=1_700_000_000)
    m.observe_published(end_to_end_s=95.0, deadline_slack_s=-1.5, published_unix_s=1_700_000_045)
    m.count_slot("failed")
    m.count_deadline_misses(2)
    m.set_queue_depth(3)
    m.set_arena_region("liveportrait", budget_bytes=3_500_000_000, used_bytes=3_100_000_000)
    m.set_arena_region("slabs", budget_bytes=1_698_693_120, used_bytes=849_346_560)
    m.record_warp_throughput(1080, 27.0)
    m.sync_fp32_rerenders(2)
    m.sync_fp32_rerenders(3)  # the backend's running total: the counter advances by the difference
    m.observe_lipsync_offset(-1.0)
    return m


def test_every_series_reports_what_was_observed() -> None:
    """After observing, each vortex_ series shows the observed values in the exposition."""
    m = observed()
    assert value(m, "vortex_stage_duration_seconds_count", stage="warp") == 2
    assert value(m, "vortex_stage_duration_seconds_sum", stage="warp") == pytest.approx(20.0)
    assert value(m, "vortex_stage_duration_seconds_bucket", stage="warp", le="10.0") == 1
    assert value(m, "vortex_slot_end_to_end_seconds_sum") == pytest.approx(165.0)
    assert value(m, "vortex_deadline_slack_seconds_count") == 2
    assert value(m, "vortex_slots_total", outcome="published") == 1
    assert value(m, "vortex_slots_total", outcome="published_late") == 1
    assert value(m, "vortex_slots_total", outcome="failed") == 1
    assert value(m, "vortex_deadline_misses_total") == 2
    assert value(m, "vortex_queue_depth") == 3
    assert value(m, "vortex_arena_bytes", region="liveportrait", kind="budget") == 3.5e9
    assert value(m, "vortex_arena_bytes", region="slabs", kind="used") == 849_346_560
    assert value(m, "vortex_warp_frames_per_second") == pytest.approx(40.0)
    assert value(m, "vortex_warp_fp32_rerenders_total") == 3
    assert value(m, "vortex_lipsync_last_offset_frames") == -1.0
    assert value(m, "vortex_lipsync_offset_frames_bucket", le="-1.0") == 1
    assert value(m, "vortex_last_publish_timestamp_seconds") == 1_700_000_045
    assert value(m, "vortex_build_info", version="0.1.0") == 1
    assert value(m, "vortex_process_resident_memory_bytes") > 0


def test_negative_slack_lands_in_negative_buckets() -> None:
    """A late publish (slack −1.5 s) is counted at le=-1 but not at le=-2."""
    m = observed()
    assert value(m, "vortex_deadline_slack_seconds_bucket", le="-2.0") == 0
    assert value(m, "vortex_deadline_slack_seconds_bucket", le="-1.0") == 1
    assert value(m, "vortex_deadline_slack_seconds_bucket", le="15.0") == 2
    assert value(m, "vortex_last_deadline_slack_seconds") == pytest.approx(-1.5)


def test_known_labels_export_zero_before_any_event() -> None:
    """Configured stages and outcomes exist as zero series from start-up (alerts see them)."""
    m = Metrics(MetricsOptions(process_metrics=False))
    for stage in m.options.stages:
        assert value(m, "vortex_stage_duration_seconds_count", stage=stage) == 0
    for outcome in m.options.outcomes:
        assert value(m, "vortex_slots_total", outcome=outcome) == 0
    assert value(m, "vortex_last_publish_timestamp_seconds") == 0


def test_all_series_names_are_prefixed_and_carry_units() -> None:
    """Every exported family starts with vortex_, and timing/byte series say so in the name."""
    names = {name for name, _ in samples(observed())}
    assert all(name.startswith("vortex_") for name in names)
    for name in names:
        if "duration" in name or "slack" in name or "end_to_end" in name:
            assert "_seconds" in name
        if "arena" in name:
            assert name.endswith("_bytes")


def test_registry_is_private_to_each_instance() -> None:
    """Two Metrics do not share series, and the global registry stays untouched."""
    a, b = Metrics(), Metrics()
    a.set_queue_depth(7)
    assert value(b, "vortex_queue_depth") == 0
    assert REGISTRY.get_sample_value("vortex_queue_depth") is None


@pytest.mark.parametrize(("call", "field_name"), [
    (lambda m: m.observe_stage("teleport", 1.0), "stage"),
    (lambda m: m.observe_stage("warp", -1.0), "duration_s"),
    (lambda m: m.observe_stage("warp", float("nan")), "duration_s"),
    (lambda m: m.count_slot("exploded"), "outcome"),
    (lambda m: m.observe_published(10.0, float("inf")), "deadline_slack_s"),
    (lambda m: m.set_arena_region("", 1, 1), "region"),
    (lambda m: m.record_warp_throughput(1080, 0.0), "duration_s"),
    (lambda m: m.count_deadline_misses(-1), "count"),
])
def test_bad_observations_are_refused_by_field(call, field_name) -> None:
    """Unknown labels and impossible numbers raise an error naming the argument."""
    with pytest.raises(StageInputError) as err:
        call(Metrics(MetricsOptions(process_metrics=False)))
    assert err.value.field == field_name


# ----- shipped configuration --------------------------------------------------------------------

def exported_sample_names() -> set[str]:
    """Every sample name a fully used Metrics exports (incl. _bucket/_sum/_count)."""
    return {name for name, _ in samples(observed())}


def test_alert_rules_are_valid_and_reference_real_series() -> None:
    """alerts.yml parses; each rule has expr, for, a severity and a summary; all series exist."""
    rules_file = yaml.safe_load((CONFIGS / "alerts.yml").read_text())
    rules = [rule for group in rules_file["groups"] for rule in group["rules"]]
    exported = exported_sample_names()
    alerts = {rule["alert"] for rule in rules}
    assert {"VortexdDown", "VortexDeadlineMissed", "VortexDeadlineSlackLow", "VortexWarpSlow",
            "VortexQueueBackingUp", "VortexNoSlotPublished"} <= alerts
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
        for name in METRIC_NAME.findall(rule["expr"]):
            assert name in exported, f"{rule['alert']} uses unknown series {name}"


def test_grafana_dashboard_has_a_panel_for_every_series() -> None:
    """The dashboard JSON loads, its queries use real series, and every series is shown."""
    dashboard = json.loads((CONFIGS / "grafana-dashboard.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exported = exported_sample_names()
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = METRIC_NAME.findall(target["expr"])
            assert names and all(name in exported for name in names), target["expr"]
            used.update(names)
    ours = {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported
            if not n.startswith(("vortex_process_", "vortex_build_"))
            and not n.endswith("_created")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert ours <= shown, f"no panel for {sorted(ours - shown)}"
