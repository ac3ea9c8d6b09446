"""The control protocol: one JSON object per line, in both directions.

Request:  {"id": <any JSON value, echoed>, "op": <one of OPS>, "args": {...}}   ("args" optional)
Response: {"id": ..., "ok": true, "result": {...}}
       or {"id": ..., "ok": false, "error": {"code": <one of ERROR_CODES>, "message": str, "details": {...}}}
Stream:   after a successful `subscribe` response ({"subscribed": true, ...args}), one line per event:
          {"id": ..., "event": {...}}; a subscriber that reads too slowly first gets
          {"kind": "dropped", "count": n} for the oldest events it lost. The server answers lines in
          order, ignores blank lines, and closes nothing on a bad line.

Arguments each op accepts (anything else is a "bad_request" naming the argument):
  submit    recipe: object (required), base_dir: absolute path (the recipe file's folder)
  status    slot_id: str (optional; without it, the daemon's status)
  slots     limit: int 1..10000, states: [str]
  cancel    slot_id: str (required), reason: str
  drain, resume, health, voices   (none)
  subscribe slot_id: str (optional; only that slot's events)

Results the daemon is expected to give (vortexctl prints them; extra keys are shown as they are):
  submit -> {"slot_id", "seq", "state", "duplicate": bool}; status SLOT -> a slot summary
  (`SlotRecord.summary()`); slots -> {"slots": [summary, ...]}; events -> {"slot_id", "kind", "at",
  "data"} where kind "state" carries {"state", "error"} and kind "progress" {"stage", "done", "total"}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vortexd.recipe import Recipe

OPS = ("submit", "status", "slots", "cancel", "drain", "resume", "health", "subscribe", "voices")
ERROR_CODES = ("bad_json", "line_too_long", "bad_request", "unknown_op", "invalid_recipe", "not_found",
               "conflict", "draining", "busy", "idle_timeout", "internal")
MAX_LINE_BYTES = 1 << 20
"""1 MiB: a recipe is a few KiB (speech.text is capped at 20,000 characters), so this is generous."""
MAX_SLOT_ID_CHARS = 200
MAX_LIST_LIMIT = 10_000

_REQUEST_KEYS = frozenset({"id", "op", "args"})


class ControlError(Exception):
    """A request that gets an error response. Raise it from a handler to choose the code."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None,
                 request_id: Any = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = dict(details or {})

    def response(self, request_id: Any = None) -> dict[str, Any]:
        """The error envelope, echoing `request_id` (or the id parsed before the error was found)."""
        rid = self.request_id if request_id is None else request_id
        return error_response(rid, self.code, self.message, self.details)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of the socket (SO_PEERCRED), for audit logs."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Request:
    """One validated request. `args` has only the keys the op accepts, with checked types."""

    id: Any
    op: str
    args: Mapping[str, Any] = field(default_factory=dict)
    peer: Peer | None = None


def ok_response(request_id: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    """The success envelope."""
    return {"id": request_id, "ok": True, "result": dict(result)}


def error_response(request_id: Any, code: str, message: str,
                   details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The error envelope: a code a program can branch on, a message a person can read."""
    return {"id": request_id, "ok": False,
            "error": {"code": code, "message": message, "details": dict(details or {})}}


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One compact JSON line (newline-terminated). NaN/inf and non-JSON types raise ValueError/TypeError."""
    # ensure_ascii: a hostile id like "\ud800" (a lone surrogate) is echoed as an escape instead of
    # failing to encode as UTF-8.
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON; refusing them keeps echoes valid JSON.
    raise ValueError(f"{name} is not valid JSON")


def _bad(request_id: Any, field_name: str, message: str, **details: Any) -> ControlError:
    return ControlError("bad_request", f"{field_name}: {message}", {"field": field_name, **details}, request_id)


def _check_str(rid: Any, name: str, value: Any, max_chars: int = MAX_SLOT_ID_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(rid, name, f"must be a non-empty string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise _bad(rid, name, f"is longer than {max_chars} characters")
    return value


def _check_limit(rid: Any, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIST_LIMIT:
        raise _bad(rid, name, f"must be an integer in 1..{MAX_LIST_LIMIT}, got {value!r}"[:200])
    return value


def _check_states(rid: Any, name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > 32:
        raise _bad(rid, name, "must be a list of at most 32 state names")
    return [_check_str(rid, f"{name}[{i}]", item, 32) for i, item in enumerate(value)]


def _check_recipe(rid: Any, name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(rid, name, f"must be an object (the recipe mapping), got {type(value).__name__}")
    return value


def _check_base_dir(rid: Any, name: str, value: Any) -> str:
    text = _check_str(rid, name, value, 4096)
    if "\x00" in text or not Path(text).is_absolute():
        raise _bad(rid, name, "must be an absolute path")
    return text


# op -> {arg: (validator, required)}
_ARGS: dict[str, dict[str, tuple[Any, bool]]] = {
    "submit": {"recipe": (_check_recipe, True), "base_dir": (_check_base_dir, False)},
    "status": {"slot_id": (_check_str, False)},
    "slots": {"limit": (_check_limit, False), "states": (_check_states, False)},
    "cancel": {"slot_id": (_check_str, True), "reason": (lambda r, n, v: _check_str(r, n, v, 500), False)},
    "drain": {},
    "resume": {},
    "health": {},
    "voices": {},
    "subscribe": {"slot_id": (_check_str, False)},
}


def parse_request(line: bytes | str, peer: Peer | None = None) -> Request:
    """Parse and validate one request line, or raise `ControlError` (bad_json, bad_request, unknown_op)."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ControlError("bad_json", f"the line is not UTF-8 text (byte {exc.start})",
                               {"position": exc.start}) from None
    try:
        message = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ControlError("bad_json", f"not valid JSON: {exc.msg} at column {exc.colno}",
                           {"position": exc.pos}) from None
    except ValueError as exc:
        raise ControlError("bad_json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ControlError("bad_json", "not valid JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise ControlError("bad_request", f"a request must be a JSON object, got {type(message).__name__}",
                           {"field": "request"})
    rid = message.get("id")
    unknown = sorted(set(message) - _REQUEST_KEYS)
    if unknown:
        raise _bad(rid, unknown[0][:100], "unknown key in the request", valid=sorted(_REQUEST_KEYS))
    op = message.get("op")
    if op is None:
        raise _bad(rid, "op", "missing", valid_ops=list(OPS))
    if not isinstance(op, str):
        raise _bad(rid, "op", f"must be a string, got {type(op).__name__}", valid_ops=list(OPS))
    if op not in _ARGS:
        raise ControlError("unknown_op", f"unknown op {op[:100]!r}", {"valid_ops": list(OPS)}, rid)
    raw_args = message.get("args", {})
    if raw_args is None:
        raw_args = {}
    if not isinstance(raw_args, dict):
        raise _bad(rid, "args", f"must be an object, got {type(raw_args).__name__}")
    schema = _ARGS[op]
    extra = sorted(set(raw_args) - set(schema))
    if extra:
        raise _bad(rid, f"args.{extra[0][:100]}", f"not an argument of {op}", valid=sorted(schema))
    args: dict[str, Any] = {}
    for name, (check, required) in schema.items():
        if name in raw_args:
            args[name] = check(rid, f"args.{name}", raw_args[name])
        elif required:
            raise _bad(rid, f"args.{name}", f"required by {op}")
    return Request(id=rid, op=op, args=args, peer=peer)


def error_from_exception(exc: BaseException) -> ControlError | None:
    """The structured error for an exception a handler let escape, or None if it is a real bug.

    Recipe and stage input errors become "invalid_recipe" (naming the field); journal errors become
    "conflict"/"not_found". Anything else is "internal" and is decided by the server.
    """
    if isinstance(exc, ControlError):
        return exc
    # Imported here so that a client importing this module does not pay for pydantic.
    from stages.errors import StageInputError
    from vortexd.journal import DuplicateSlot, SlotFinished, SlotNotFound
    from vortexd.recipe import RecipeError

    if isinstance(exc, (RecipeError, StageInputError)):
        field_name = exc.field or "recipe"
        return ControlError("invalid_recipe", f"{field_name}: {exc.message}",
                            {"field": field_name, "message": exc.message, **_jsonable(exc.details)})
    if isinstance(exc, SlotNotFound):
        return ControlError("not_found", str(exc), {"slot_id": exc.slot_id})
    if isinstance(exc, DuplicateSlot):
        return ControlError("conflict", str(exc), {"slot_id": exc.slot_id, "seq": exc.seq})
    if isinstance(exc, SlotFinished):
        return ControlError("conflict", str(exc), {"slot_id": exc.slot_id, "state": exc.state})
    return None


def _jsonable(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details made safe to encode (a detail that is not JSON becomes its str)."""
    safe: dict[str, Any] = {}
    for key, value in details.items():
        if key in ("field", "message"):
            continue
        try:
            json.dumps(value, allow_nan=False)
            safe[key] = value
        except (TypeError, ValueError):
            safe[key] = str(value)
    return safe


def parse_submit(args: Mapping[str, Any], allowed_roots: Sequence[Path],
                 default_base_dir: Path | None = None) -> "Recipe":
    """The `Recipe` of a submit request, or `ControlError("invalid_recipe")` naming the field.

    `base_dir` (the recipe's folder) comes from the client, and `parse_recipe` trusts its
    base_dir, so it is used only when it lies inside the allowed roots: otherwise any client could
    make the daemon read any file. An untrusted or missing base_dir still lets a text-only recipe,
    or one with absolute paths inside the roots, through; a relative path is then refused by name.
    """
    from vortexd.recipe import RecipeError, parse_recipe

    given = args.get("base_dir") or default_base_dir
    base_dir = Path(given).resolve() if given else None
    roots = [Path(root).resolve() for root in allowed_roots]
    if base_dir is not None and not any(base_dir.is_relative_to(root) for root in roots):
        base_dir = None
    try:
        return parse_recipe(args["recipe"], base_dir, list(roots))
    except RecipeError as exc:
        mapped = error_from_exception(exc)
        assert mapped is not None
        raise mapped from None

