"""The operator page's status document from a real channel's airings and slot views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.hls_media import make_hls_slot
from vortexd.channel import Channel, Schedule
from vortexd.web_status import page_status, slot_row

T0, CADENCE = 1_700_000_000.0, 2.0


def view(slot_id: str, air_s: float, deadline_s: float, **fields) -> dict:
    """A pending slot as `ops.slot_view` lists it (engine times)."""
    return {"slot_id": slot_id, "seq": 1, "state": "warping", "air_s": air_s, "deadline_s": deadline_s,
            "late": False, "running_stage": "warp", "deadline_slack_s": None, "predicted_publish_s": None,
            **fields}


def test_slack_is_the_published_one_else_the_predicted_one():
    assert slot_row(view("s", 150.0, 148.0, predicted_publish_s=140.5), now_s=100.0)["deadline_slack_s"] == 7.5
    assert slot_row(view("s", 150.0, 148.0, predicted_publish_s=151.0), now_s=100.0)["deadline_slack_s"] == -3.0
    assert slot_row(view("s", 150.0, 148.0, deadline_slack_s=2.25), now_s=100.0)["deadline_slack_s"] == 2.25
    row = slot_row(view("s", 150.0, 148.0), now_s=100.0)
    assert (row["deadline_slack_s"], row["air_in_s"], row["deadline_in_s"]) == (None, 50.0, 48.0)


@pytest.fixture(scope="module")
def slots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished slots' hls/ folders (2 s each): one to air, one as the filler."""
    root = tmp_path_factory.mktemp("hls")
    return {name: make_hls_slot(root / name / "hls", level=level, tone_hz=440.0, seconds=2)
            for name, level in (("a", 40), ("filler", 120))}


def test_a_missed_air_time_shows_the_filler_on_air_and_in_the_misses(slots, tmp_path):
    channel = Channel(tmp_path / "channel", slots["filler"], Schedule(T0, CADENCE), clock=lambda: T0)
    channel.slot_ready(0, "slot-a", slots["a"])
    channel.tick(T0)
    channel.tick(T0 + CADENCE)  # index 1 has no slot ready: the filler airs
    wall = T0 + CADENCE + 0.5
    doc = page_status(phase="serving", now_s=1000.0, wall_now_s=wall,
                      slot_views=[view("slot-c", 1003.5, 1001.5, predicted_publish_s=1000.9)],
                      arena={"slab0": {"kind": "slab", "budget_bytes": 10, "used_bytes": 5}},
                      channel_stats=channel.stats(wall), channel_window=channel.state.window,
                      misses=[{"slot_id": "slot-b", "air_in_s": -2.5, "reason": "deadline missed"}])
    assert doc["on_air"] == {"slot_id": "filler", "filler": True, "state": "on air", "air_in_s": -0.5,
                             "deadline_slack_s": None}
    # Nothing registered for index 2: the filler airs next unless a slot lands in time.
    assert doc["next"]["filler"] and doc["next"]["air_in_s"] == 1.5
    assert [m["slot_id"] for m in doc["misses"]] == ["slot-b", "air index 1"]
    assert "not ready" in doc["misses"][1]["reason"] and doc["misses"][1]["filler"]
    assert doc["fillers_aired"] == 1 and doc["channel"]["slots_aired"] == 1
    assert doc["slots"][0]["deadline_slack_s"] == 0.6 and doc["arena"]["slab0"]["used_bytes"] == 5
    json.dumps(doc, allow_nan=False)  # what the server sends: strict JSON

    channel.slot_ready(2, "slot-c", slots["a"])
    doc = page_status(phase="serving", now_s=1000.0, wall_now_s=wall, arena={},
                      slot_views=[view("slot-c", 1003.5, 1001.5, state="published")],
                      channel_stats=channel.stats(wall), channel_window=channel.state.window)
    assert doc["next"]["slot_id"] == "slot-c" and not doc["next"]["filler"]


def test_before_the_channel_exists_next_is_the_first_slot_to_air():
    doc = page_status(phase="starting", now_s=10.0, arena={},
                      slot_views=[view("late-one", 5.0, 3.0), view("soon", 40.0, 38.0)])
    assert doc["on_air"] is None and doc["next"]["slot_id"] == "soon" and doc["misses"] == []
    assert [row["slot_id"] for row in doc["slots"]] == ["late-one", "soon"]
