"""The motion planner: speech, expression presets and a seed in; per-frame animation curves out.

Pure numpy, no models. `plan_motion` is the entry point; `normalize_expression` validates a
recipe's `motion.expression` into preset segments.
"""

from stages.motion.planner import plan_motion
from stages.motion.presets import PRESET_NAMES, PRESETS, Preset, PresetSegment, normalize_expression

__all__ = ["PRESET_NAMES", "PRESETS", "Preset", "PresetSegment", "normalize_expression", "plan_motion"]
