"""Expression presets and `motion.expression` parsing."""

from __future__ import annotations

import pytest

from stages.errors import StageInputError
from stages.motion import PRESET_NAMES, PRESETS, PresetSegment, normalize_expression


def test_single_name_is_one_segment_at_zero():
    """A preset name becomes one segment starting at 0 (case and spaces forgiven)."""
    assert normalize_expression(" Excited ", 45.0) == (PresetSegment("excited", 0.0),)


def test_list_of_names_spreads_evenly():
    """A list of names is spread evenly over the slot."""
    segs = normalize_expression(["calm", "neutral", "excited", "manic"], 45.0)
    assert [s.preset for s in segs] == ["calm", "neutral", "excited", "manic"]
    assert [s.start_s for s in segs] == [0.0, 11.25, 22.5, 33.75]


def test_segment_dicts_first_moved_to_zero():
    """Explicit {preset, start_s} segments keep their times; the first one is moved to 0."""
    segs = normalize_expression([{"preset": "calm", "start_s": 2.0}, PresetSegment("manic", 30.0)], 45.0)
    assert segs == (PresetSegment("calm", 0.0), PresetSegment("manic", 30.0))


def test_unknown_preset_lists_the_valid_ones():
    """An unknown preset names the field and lists every valid preset."""
    with pytest.raises(StageInputError) as err:
        normalize_expression("grumpy", 45.0)
    assert err.value.field == "motion.expression"
    assert all(name in err.value.message for name in PRESET_NAMES)
    assert err.value.details["valid"] == list(PRESET_NAMES)


@pytest.mark.parametrize("value", [
    [{"preset": "calm", "start_s": 0.0}, {"preset": "manic", "start_s": 0.0}],   # not increasing
    [{"preset": "calm", "start_s": 0.0}, {"preset": "manic", "start_s": 50.0}],  # past the end
    [{"preset": "calm", "start_s": -1.0}],                                       # negative
    [{"preset": "calm"}],                                                        # missing start
    [{"preset": "calm", "start_s": 0.0, "mood": 1}],                             # unknown key
    ["calm", {"preset": "manic", "start_s": 9.0}],                               # mixed forms
    [],
    42,
])
def test_bad_expressions_are_rejected_with_the_field(value):
    """Malformed expressions raise StageInputError naming motion.expression."""
    with pytest.raises(StageInputError) as err:
        normalize_expression(value, 45.0)
    assert err.value.field == "motion.expression"


def test_preset_numbers_are_ordered():
    """Mouth gain, head amplitude and head rate rise calm < neutral < excited < manic; blinks speed up."""
    order = [PRESETS[n] for n in ("calm", "neutral", "excited", "manic")]
    for attr in ("mouth_gain", "head_amplitude_deg", "head_rate_hz", "shift_amplitude_px"):
        values = [getattr(p, attr) for p in order]
        assert values == sorted(values) and len(set(values)) == 4, attr
    intervals = [p.blink_interval_s for p in order]
    assert intervals == sorted(intervals, reverse=True)
    assert PRESETS["excited"].eye_wide > PRESETS["neutral"].eye_wide
