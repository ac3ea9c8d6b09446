"""The channel's pure policy on a made-up timeline: what airs when, numbering, window, grace."""

from __future__ import annotations

import pytest

from vortexd.channel_plan import (
    ChannelState,
    Media,
    Schedule,
    Segment,
    air,
    decide,
    expire,
    next_wakeup_s,
)
from vortexd.channel_playlist import PlaylistError, iso_utc, parse_vod, render_live

T0 = 1_700_000_000.0
SCHEDULE = Schedule(T0, 45.0)


def media(*durations: float) -> Media:
    """Media of segments with these durations."""
    return Media("init.mp4", tuple(Segment(f"seg_{i:05d}.m4s", d) for i, d in enumerate(durations)))


SLOT = media(*([2.0] * 22 + [1.0]))  # a 45 s slot in 2 s segments


def run(state: ChannelState, now_s: float, ready: dict[int, str], *, window: int = 3,
        grace_s: float | None = 10.0, content: Media = SLOT) -> ChannelState:
    """Air whatever `decide` says is due at `now_s` (the loop a Channel runs, without files)."""
    decision = decide(SCHEDULE, state, now_s, ready)
    assert decision is not None
    return air(state, decision, media=content, slot_id=decision.slot_id or "filler",
               folder=f"air-{state.next_ordinal:06d}", filler=decision.slot_id is None, now_s=now_s,
               window_slots=window, grace_s=grace_s)


def test_nothing_airs_before_t0_and_each_index_airs_once_at_its_air_time() -> None:
    """Before T0 nothing is due; at T0 index 0 airs; not again until T0 + cadence, then index 1."""
    state = ChannelState()
    assert decide(SCHEDULE, state, T0 - 0.001, {0: "a"}) is None
    first = decide(SCHEDULE, state, T0, {0: "a"})
    assert (first.index, first.air_time_s, first.slot_id, first.skipped) == (0, T0, "a", 0)
    state = run(state, T0, {0: "a"})
    assert decide(SCHEDULE, state, T0 + 44.999, {1: "b"}) is None
    second = decide(SCHEDULE, state, T0 + 45.0, {1: "b"})
    assert (second.index, second.air_time_s, second.slot_id) == (1, T0 + 45.0, "b")


def test_a_slot_not_ready_at_its_air_time_gets_the_filler_and_the_next_slot_airs_after_it() -> None:
    """Index 1 is not ready: the filler airs at its air time; index 2 airs at its own."""
    state = run(ChannelState(), T0, {0: "a"})
    missed = decide(SCHEDULE, state, T0 + 45.0, {2: "c"})
    assert missed.slot_id is None and "index 1 not ready" in missed.reason
    state = run(state, T0 + 45.0, {2: "c"})
    assert decide(SCHEDULE, state, T0 + 89.9, {2: "c"}) is None
    state = run(state, T0 + 90.0, {2: "c"})
    assert [(e.index, e.slot_id, e.filler) for e in state.window] == [(0, "a", False), (1, "filler", True),
                                                                      (2, "c", False)]
    assert (state.slots_aired, state.fillers_aired) == (2, 1)
    assert state.window[1].reason and not state.window[2].reason


def test_air_times_that_passed_while_down_are_skipped_not_aired_late() -> None:
    """After a gap of 3 air times only the current one airs; the missed ones are counted."""
    state = run(ChannelState(), T0, {0: "a"})
    decision = decide(SCHEDULE, state, T0 + 3.5 * 45, {1: "b", 3: "d"})
    assert (decision.index, decision.slot_id, decision.skipped) == (3, "d", 2)
    state = run(state, T0 + 3.5 * 45, {3: "d"})
    assert state.air_times_skipped == 2 and state.last_index == 3


def test_an_index_already_aired_is_never_due_again_even_if_the_schedule_moves_back() -> None:
    """A restart with an earlier t0 cannot make the channel air into its own past."""
    state = run(ChannelState(), T0 + 45, {1: "b"})
    assert decide(Schedule(T0 - 40, 45.0), state, T0 + 46, {1: "x"}) is None
    assert decide(SCHEDULE, state, T0 + 46, {1: "x"}) is None


def test_media_and_discontinuity_sequences_follow_the_window_as_it_slides() -> None:
    """With a window of 2, airing 3 entries retires the first: the playlist's media sequence
    becomes the count of segments that left, its discontinuity sequence the entries that left."""
    state = ChannelState()
    for k in range(3):
        state = run(state, T0 + 45 * k, {k: f"s{k}"}, window=2)
    assert [e.first_msn for e in state.window] == [23, 46]
    assert [e.ordinal for e in state.window] == [1, 2]
    assert [r.folder for r in state.retired] == ["air-000000"]
    text = render_live(state.window, T0 + 90 + 44, 2)
    assert "#EXT-X-MEDIA-SEQUENCE:23\n" in text and "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1  # before the second listed entry only
    assert "air-000000/" not in text


def test_segments_are_revealed_as_their_air_comes_and_cut_when_the_next_entry_airs() -> None:
    """A 45 s slot appears segment by segment in wall-clock time; a slot longer than the cadence
    loses the segments that would start after the next air time."""
    long_slot = media(*([2.0] * 25))  # 50 s: the last 3 segments start after T0 + 45
    state = run(ChannelState(), T0, {0: "a"}, content=long_slot)
    assert len(state.window[0].revealed(T0)) == 1
    assert len(state.window[0].revealed(T0 + 5.9)) == 3
    assert len(state.window[0].revealed(T0 + 100)) == 25
    state = run(state, T0 + 45, {1: "b"})
    assert len(state.window[0].media.segments) == 23  # starts 0, 2, …, 44
    assert state.window[1].first_msn == 23 and state.next_msn == 46


def test_retired_folders_are_kept_for_the_grace_period_then_expire() -> None:
    """A folder leaving the window is deleted only once its grace has passed."""
    state = ChannelState()
    for k in range(2):
        state = run(state, T0 + 45 * k, {k: "s"}, window=1, grace_s=10.0)
    assert state.retired[0].delete_after_s == T0 + 55
    kept, gone = expire(state, T0 + 54.9)
    assert gone == [] and kept == state
    cleared, gone = expire(state, T0 + 55)
    assert gone == ["air-000000"] and cleared.retired == ()


def test_default_grace_is_the_rfc_minimum() -> None:
    """With no grace configured, files stay the playlist's duration plus a segment (RFC 8216)."""
    state = ChannelState()
    for k in range(3):
        state = run(state, T0 + 45 * k, {k: "s"}, window=2, grace_s=None)
    # The leaving playlist listed entries 0 and 1 (45 s each) and entry 2 (45 s when complete).
    assert state.retired[0].delete_after_s == pytest.approx(T0 + 90 + 135 + 2)


def test_next_wakeup_names_the_next_reveal_air_time_or_deletion() -> None:
    """The caller can sleep until the next change instead of polling."""
    state = ChannelState()
    assert next_wakeup_s(SCHEDULE, state, T0 - 100, {}) == T0
    assert next_wakeup_s(SCHEDULE, state, T0 + 1, {}) == T0 + 1  # index 0 is due now
    state = run(state, T0, {0: "a"})
    assert next_wakeup_s(SCHEDULE, state, T0 + 0.5, {}) == T0 + 2
    assert next_wakeup_s(SCHEDULE, state, T0 + 44.5, {}) == T0 + 45


def test_latest_index_is_exact_at_air_times() -> None:
    """An air time is due at exactly its instant, with awkward floating-point cadences too."""
    schedule = Schedule(0.1, 0.1)
    for k in range(1, 200):
        assert schedule.latest_index_at(schedule.air_time_s(k)) == k
        assert schedule.latest_index_at(schedule.air_time_s(k) - 1e-9) == k - 1


def test_slot_playlists_that_cannot_air_are_refused_with_the_reason() -> None:
    """Unfinished, map-less, or path-climbing playlists are refused; a good one parses."""
    good = ('#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI="init.mp4"\n'
            "#EXTINF:2.000000,\nseg_00000.m4s\n#EXTINF:1.500000,\nseg_00001.m4s\n#EXT-X-ENDLIST\n")
    assert parse_vod(good) == media(2.0, 1.5)
    with pytest.raises(PlaylistError, match="ENDLIST"):
        parse_vod(good.replace("#EXT-X-ENDLIST\n", ""))
    with pytest.raises(PlaylistError, match="EXT-X-MAP"):
        parse_vod(good.replace('#EXT-X-MAP:URI="init.mp4"\n', ""))
    with pytest.raises(PlaylistError, match="plain file name"):
        parse_vod(good.replace("seg_00001.m4s", "../other/seg_00001.m4s"))
    assert iso_utc(T0 + 0.25) == "2023-11-14T22:13:20.250Z"
