"""The recipe: what one slot shows and says (DESIGN §3), parsed strictly from TOML or JSON.

Unknown keys, out-of-range values and paths outside the allowed roots are refused with a
`RecipeError` whose message names the field. Relative paths resolve against the recipe's folder.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stages.motion.presets import PRESET_NAMES

MAX_DURATION_S = 600.0
"""Ten minutes: far beyond a 45 s slot, small enough that a typo cannot exhaust memory."""
MAX_TEXT_CHARS = 20_000
"""About 3,000 words, i.e. ~20 minutes of speech: any real slot script is far shorter."""


class RecipeError(ValueError):
    """A recipe that cannot be used. `field` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.details = details


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ActorSpec(_Strict):
    """Who is on screen: an image file, a prompt (for Flux or the actor library), or neither."""

    image: Path | None = None
    prompt: Annotated[str, Field(min_length=1, max_length=2000)] | None = None


class SpeechSpec(_Strict):
    """What is said: text for a TTS voice, or a wav file brought by the recipe."""

    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | None = None
    audio: Path | None = None
    voice: Annotated[str, Field(min_length=1, max_length=100)] = "en-us"
    rate_wpm: Annotated[int, Field(ge=80, le=450)] = 165

    @model_validator(mode="after")
    def _text_or_audio(self) -> "SpeechSpec":
        if self.audio is None and self.text is None:
            raise ValueError("give speech.text or speech.audio")
        if self.audio is not None and self.text is not None:
            raise ValueError("give speech.text or speech.audio, not both")
        if self.text is not None and not self.text.strip():
            raise ValueError("speech.text is empty")
        return self


class ExpressionSegment(_Strict):
    """One preset from `start_s` on."""

    preset: str
    start_s: Annotated[float, Field(ge=0.0, le=MAX_DURATION_S)]


def _check_preset(name: str) -> str:
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}")
    return name


class MotionSpec(_Strict):
    """How the actor feels: one preset, a list of presets, or timed preset segments; the seed; and
    optionally a driving video (or LivePortrait template) whose motion the actor performs."""

    expression: str | list[str] | list[ExpressionSegment] = "neutral"
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    driving: Path | None = None
    driving_mode: Literal["pose", "full"] = "pose"

    @field_validator("expression")
    @classmethod
    def _known_presets(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else list(value)
        if not items:
            raise ValueError(f"expression list is empty; valid presets: {', '.join(PRESET_NAMES)}")
        for item in items:
            _check_preset(item if isinstance(item, str) else item.preset)
        if not isinstance(value, str) and not isinstance(items[0], str):
            starts = [s.start_s for s in items]
            if starts != sorted(starts) or len(set(starts)) != len(starts):
                raise ValueError("segment start_s values must be strictly increasing")
        return value


class OutputSpec(_Strict):
    """Length and frame rate of the slot."""

    duration_s: Annotated[float, Field(gt=0.0, le=MAX_DURATION_S)] = 45.0
    fps: Annotated[int, Field(ge=1, le=60)] = 24

    @property
    def n_frames(self) -> int:
        """Frames in the slot (45 s × 24 fps = 1080)."""
        return int(round(self.duration_s * self.fps))


class Recipe(_Strict):
    """A whole slot recipe. Build it with `parse_recipe` / `load_recipe` to get path checks."""

    slot_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")]
    actor: ActorSpec = ActorSpec()
    speech: SpeechSpec
    motion: MotionSpec = MotionSpec()
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _segments_inside_slot(self) -> "Recipe":
        expression = self.motion.expression
        if isinstance(expression, list) and expression and isinstance(expression[0], ExpressionSegment):
            late = [s.start_s for s in expression if s.start_s >= self.output.duration_s]
            if late:
                raise ValueError(f"motion.expression: segment start_s {late[0]} is not inside the "
                                 f"{self.output.duration_s} s slot")
        return self

    def input_files(self) -> dict[str, Path]:
        """The input files the recipe names, by field (for a journaled recipe: its spool copies)."""
        named = {"actor.image": self.actor.image, "speech.audio": self.speech.audio,
                 "motion.driving": self.motion.driving}
        return {field: Path(path) for field, path in named.items() if path is not None}

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the recipe (what the manifest records)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _first_error(exc: ValidationError) -> RecipeError:
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    details = {"errors": [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in errors]}
    if "valid presets" in message:
        details["valid"] = list(PRESET_NAMES)
    return RecipeError(field, message, **details)


def _resolve_inside(path: Path, base: Path | None, roots: list[Path], field: str) -> Path:
    """`path` made absolute against `base`, refused unless it lies inside one of `roots`."""
    if not path.is_absolute() and base is None:
        raise RecipeError(field, f"relative path {str(path)!r} needs a recipe folder inside the allowed roots",
                          path=str(path), allowed_roots=[str(r) for r in roots])
    resolved = (base / path).resolve() if not path.is_absolute() else path.resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    # Name the path as given, never where a symlink leads: the refusal must not reveal the target.
    raise RecipeError(field, f"path {str(path)!r} is outside the allowed roots",
                      path=str(path), allowed_roots=[str(r) for r in roots])


def parse_recipe(data: Any, base_dir: Path | None, allowed_roots: list[Path] = ()) -> Recipe:
    """Validate a recipe mapping; resolve its paths against `base_dir` inside the allowed roots.

    `base_dir` itself is always an allowed root (a recipe may use files beside it). With no
    `base_dir` (a daemon submission from an untrusted folder) only absolute paths inside
    `allowed_roots` are accepted.
    """
    if not isinstance(data, dict):
        raise RecipeError("", f"a recipe must be a table/object, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    roots = [*([base_dir] if base_dir is not None else []), *allowed_roots]
    actor, speech = recipe.actor, recipe.speech
    if actor.image is not None:
        actor = actor.model_copy(update={"image": _resolve_inside(actor.image, base_dir, roots, "actor.image")})
    if speech.audio is not None:
        speech = speech.model_copy(update={"audio": _resolve_inside(speech.audio, base_dir, roots, "speech.audio")})
    motion = recipe.motion
    if motion.driving is not None:
        motion = motion.model_copy(update={"driving": _resolve_inside(motion.driving, base_dir, roots,
                                                                       "motion.driving")})
    return recipe.model_copy(update={"actor": actor, "speech": speech, "motion": motion})


def read_recipe_file(path: Path) -> Any:
    """The raw mapping in a .toml or .json recipe file; RecipeError("recipe", …) if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError("recipe", f"cannot read {path}: {exc}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError("recipe", f"{path.name} is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {exc}") from None


def load_recipe(path: Path, allowed_roots: list[Path] = ()) -> Recipe:
    """Read, validate and path-check a recipe file (relative paths resolve against its folder)."""
    return parse_recipe(read_recipe_file(path), path.resolve().parent, allowed_roots)
