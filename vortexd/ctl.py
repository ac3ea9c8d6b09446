"""`vortexctl`: the operator's client for a running vortexd (submit, status, slots, cancel, …).

Human output by default, `--json` for the raw protocol responses. Exit status: 0 success,
1 the daemon refused or the slot failed, 2 usage errors or no daemon to talk to.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from vortexd.control.client import ControlClient, DaemonUnavailable, ProtocolViolation
from vortexd.slot_state import TERMINAL_STATES

DEFAULT_SOCKET = Path("/run/vortexd/control.sock")
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 30.0
"""How long a command waits for the daemon's answer."""
SUBMIT_TIMEOUT_S = 180.0
"""...and a submit: the daemon answers once it has checked the inputs, and reading a driving clip
takes up to 45 s on two cores (120 s at 1080p), more beside a slot's warp."""


class _Fail(Exception):
    """Stop the command with this exit status (the message is already printed)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _limit(text: str) -> int:
    """argparse type for --limit: an integer the daemon accepts (1..10000)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("must be between 1 and 10000")
    return value


def _default_socket() -> Path:
    return Path(os.environ.get("VORTEX_SOCKET") or DEFAULT_SOCKET)


def _clock(ts: Any) -> str:
    """A journal timestamp as local wall-clock time (empty when absent)."""
    if not isinstance(ts, (int, float)):
        return ""
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_mapping(mapping: Mapping[str, Any], out: TextIO, indent: int = 0) -> None:
    """Print a result as an indented `key: value` outline (any JSON shape)."""
    pad = "  " * indent
    for key, value in mapping.items():
        if key.endswith("_at") and isinstance(value, (int, float)):
            print(f"{pad}{key}: {_clock(value)}", file=out)
        elif isinstance(value, Mapping):
            print(f"{pad}{key}:" + ("" if value else " -"), file=out)
            print_mapping(value, out, indent + 1)
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            print(f"{pad}{key}:", file=out)
            for item in value:
                if isinstance(item, Mapping):
                    print(f"{pad}  -", file=out)
                    print_mapping(item, out, indent + 2)
                else:
                    print(f"{pad}  - {_scalar(item)}", file=out)
        elif isinstance(value, list):
            print(f"{pad}{key}: " + (", ".join(_scalar(v) for v in value) or "-"), file=out)
        else:
            print(f"{pad}{key}: {_scalar(value)}", file=out)


def print_slots(slots: list[Mapping[str, Any]], out: TextIO) -> None:
    """Print slot summaries as an aligned table, newest first as the daemon sent them."""
    if not slots:
        print("no slots", file=out)
        return
    header = ("SEQ", "SLOT", "STATE", "RESTARTS", "CHANGED", "ERROR")
    rows = [(_scalar(s.get("seq")), str(s.get("slot_id", "?")), str(s.get("state", "?")),
             _scalar(s.get("attempts")), _clock(s.get("state_at")), (s.get("error") or "")[:60])
            for s in slots]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
        print(line.rstrip(), file=out)


def format_event(event: Mapping[str, Any]) -> str:
    """One human line for a streamed event."""
    kind = event.get("kind", "?")
    data = event.get("data") or {}
    when = time.strftime("%H:%M:%S", time.localtime(event["at"])) if isinstance(event.get("at"), (int, float)) \
        else time.strftime("%H:%M:%S")
    slot = event.get("slot_id") or "-"
    if kind == "state":
        text = str(data.get("state"))
        if data.get("error"):
            text += f" ({data['error']})"
    elif kind == "progress":
        text = f"{data.get('stage')} {data.get('done')}/{data.get('total')}"
    elif kind == "dropped":
        return f"{when}  {event.get('count')} events dropped (this client read too slowly)"
    else:
        text = json.dumps(data, separators=(",", ":")) if data else ""
    return f"{when}  {slot}  {kind}  {text}".rstrip()


class _Session:
    """What every command needs: the socket, output mode and streams."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.socket = Path(args.socket)
        self.json = bool(args.json)
        self.timeout_s = float(args.timeout)
        self.out, self.err = out, err

    def client(self) -> ControlClient:
        """A connected client (`DaemonUnavailable` is handled by `main`)."""
        return ControlClient(self.socket, self.timeout_s).connect()

    def result(self, response: dict[str, Any]) -> dict[str, Any]:
        """The result of a response; an error response is printed and ends the command with 1."""
        if self.json:
            print(json.dumps(response), file=self.out, flush=True)
        if response.get("ok") is True and isinstance(response.get("result"), dict):
            return response["result"]
        self.error(response)
        raise _Fail(EXIT_ERROR)

    def error(self, response: Mapping[str, Any]) -> None:
        """Print `error: <code>: <message>` for an error response."""
        error = response.get("error") if isinstance(response.get("error"), dict) else {}
        code, message = error.get("code", "protocol"), error.get("message", "malformed response")
        print(f"error: {code}: {message}", file=self.err)
        if code == "internal" and error.get("details", {}).get("error_id"):
            print(f"hint: the daemon log has the details under error_id={error['details']['error_id']}",
                  file=self.err)

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One request on its own connection; returns the result."""
        with self.client() as client:
            return self.result(client.request(op, args))


def _cmd_submit(session: _Session, args: argparse.Namespace) -> int:
    # Imported here: only submit needs the recipe reader (and pydantic with it).
    from vortexd.recipe import RecipeError, read_recipe_file

    path = Path(args.recipe)
    try:
        recipe = read_recipe_file(path)
    except RecipeError as exc:
        print(f"error: {exc.message}", file=session.err)
        return EXIT_USAGE
    request = {"recipe": recipe, "base_dir": str(path.resolve().parent)}
    if not args.wait:
        result = session.call("submit", request)
        if not session.json:
            _print_submitted(result, session.out)
        return EXIT_OK
    slot_id = recipe.get("slot_id") if isinstance(recipe, dict) else None
    # Subscribe before submitting, so no event of a fast slot can be missed.
    with session.client() as watcher:
        subscribed, events = watcher.subscribe(slot_id if isinstance(slot_id, str) else None)
        session.result(subscribed)
        result = session.call("submit", request)
        if not session.json:
            _print_submitted(result, session.out)
        state = str(result.get("state", ""))
        if state not in TERMINAL_STATES:
            state = _follow(session, events, str(result.get("slot_id", slot_id)))
    return _finish(session, str(result.get("slot_id", slot_id)), state)


def _print_submitted(result: Mapping[str, Any], out: TextIO) -> None:
    slot, seq, state = result.get("slot_id"), result.get("seq"), result.get("state")
    if result.get("duplicate"):
        print(f"already accepted: slot {slot} (seq {seq}) is {state}", file=out)
    else:
        print(f"accepted slot {slot} (seq {seq})", file=out)


def _follow(session: _Session, events: Iterator[dict[str, Any]], slot_id: str) -> str:
    """Show a slot's progress until it reaches a terminal state; returns that state."""
    from vortexd.progress import ProgressPrinter

    progress = ProgressPrinter(session.err)
    mid_line = False  # a TTY progress bar is being redrawn on the current line
    for line in events:
        if session.json:
            print(json.dumps(line), file=session.out, flush=True)
        if "event" not in line:
            if line.get("ok") is False:
                session.error(line)
                raise _Fail(EXIT_ERROR)
            continue
        event = line["event"]
        if event.get("slot_id") not in (None, slot_id):
            continue
        kind, data = event.get("kind"), event.get("data") or {}
        if kind == "progress" and not session.json:
            done, total = int(data.get("done", 0)), int(data.get("total", 0))
            progress(str(data.get("stage", "?")), done, total)
            mid_line = progress.is_tty and done < total
        elif kind == "state":
            state = str(data.get("state"))
            if not session.json:
                print(("\n" if mid_line else "") + format_event(event), file=session.err, flush=True)
                mid_line = False
            if state in TERMINAL_STATES:
                return state
    print(f"error: stream_ended: vortexd ended the event stream before slot {slot_id} finished",
          file=session.err)
    raise _Fail(EXIT_ERROR)


def _finish(session: _Session, slot_id: str, state: str) -> int:
    """Report a finished slot (with its result, when the daemon gives one) and choose the exit status."""
    if not session.json:
        with session.client() as client:
            response = client.request("status", {"slot_id": slot_id})
        result = response.get("result") if response.get("ok") else None
        detail = ""
        if isinstance(result, dict):
            outcome = result.get("result") or {}
            detail = str(outcome.get("video") or outcome.get("slot_dir") or result.get("error") or "")
        stream = session.out if state == "published" else session.err
        print(f"{state} {slot_id}" + (f": {detail}" if detail else ""), file=stream)
    return EXIT_OK if state == "published" else EXIT_ERROR


def print_arena(arena: Mapping[str, Mapping[str, Any]], out: TextIO) -> None:
    """Print the arena's regions as a table: kind, budget, use now and (model stages) peak."""
    from vram import format_bytes

    def size(region: Mapping[str, Any], key: str) -> str:
        return format_bytes(region[key]) if isinstance(region.get(key), int) else "-"

    header = ("REGION", "KIND", "BUDGET", "USED", "PEAK")
    rows = [(name, str(r.get("kind", "?")), size(r, "budget_bytes"), size(r, "used_bytes"), size(r, "peak_bytes"))
            for name, r in arena.items()]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))),
              file=out)


def _cmd_status(session: _Session, args: argparse.Namespace) -> int:
    result = session.call("status", {"slot_id": args.slot} if args.slot else None)
    if not session.json:
        arena = result.get("arena")
        print_mapping({k: v for k, v in result.items() if k != "arena"}, session.out)
        if isinstance(arena, Mapping) and arena:
            print("arena:", file=session.out)
            print_arena(arena, session.out)
    return EXIT_OK


def _cmd_slots(session: _Session, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"limit": args.limit}
    if args.state:
        request["states"] = args.state
    result = session.call("slots", request)
    if not session.json:
        print_slots(list(result.get("slots", [])), session.out)
    return EXIT_OK


def _cmd_cancel(session: _Session, args: argparse.Namespace) -> int:
    request = {"slot_id": args.slot}
    if args.reason:
        request["reason"] = args.reason
    result = session.call("cancel", request)
    if not session.json:
        print(f"slot {result.get('slot_id', args.slot)} is {result.get('state', 'cancelled')}", file=session.out)
    return EXIT_OK


def _cmd_simple(op: str) -> Any:
    def run(session: _Session, args: argparse.Namespace) -> int:
        result = session.call(op)
        if not session.json:
            print_mapping(result, session.out)
        return EXIT_OK
    run.__doc__ = f"Send `{op}` and print its result."
    return run


def _cmd_voices(session: _Session, args: argparse.Namespace) -> int:
    result = session.call("voices")
    if not session.json:
        for backend, names in result.get("voices", {}).items():
            print(f"{backend} ({len(names)}): " + ", ".join(names), file=session.out)
    return EXIT_OK


def _cmd_subscribe(session: _Session, args: argparse.Namespace) -> int:
    with session.client() as client:
        response, events = client.subscribe(args.slot)
        session.result(response)
        try:
            for line in events:
                if session.json:
                    print(json.dumps(line), file=session.out, flush=True)
                elif "event" in line:
                    print(format_event(line["event"]), file=session.out, flush=True)
                elif line.get("ok") is False:
                    session.error(line)
                    return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_OK  # Ctrl-C is how a person stops watching
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `vortexctl`."""
    # Common options are accepted before or after the command (`vortexctl --json slots` and
    # `vortexctl slots --json`); SUPPRESS keeps a subcommand from overwriting what came first, and
    # `main` fills in the defaults (set_defaults would change the shared actions of both parsers).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS, metavar="PATH",
                        help=f"control socket (default $VORTEX_SOCKET or {DEFAULT_SOCKET})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the raw JSON responses")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, metavar="S",
                        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g}; "
                             f"submit {SUBMIT_TIMEOUT_S:g})")

    parser = argparse.ArgumentParser(prog="vortexctl", parents=[common],
                                     description="Control a running vortexd over its control socket.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Any, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    submit = command("submit", _cmd_submit, "submit a recipe (.toml or .json)")
    submit.set_defaults(default_timeout_s=SUBMIT_TIMEOUT_S)
    submit.add_argument("recipe", help="recipe file; relative paths in it resolve against its folder")
    submit.add_argument("--wait", action="store_true", help="follow the slot until published or failed")
    status = command("status", _cmd_status, "daemon status, or one slot's status")
    status.add_argument("slot", nargs="?", help="slot_id")
    slots = command("slots", _cmd_slots, "list recent slots, newest first")
    slots.add_argument("--limit", type=_limit, default=20, help="how many (default 20)")
    slots.add_argument("--state", action="append", help="only slots in this state (repeatable)")
    cancel = command("cancel", _cmd_cancel, "cancel a slot that has not finished")
    cancel.add_argument("slot", help="slot_id")
    cancel.add_argument("--reason", help="recorded in the journal")
    command("drain", _cmd_simple("drain"), "finish the slot in flight, then accept no more work")
    command("resume", _cmd_simple("resume"), "accept work again after a drain")
    command("health", _cmd_simple("health"), "is the daemon healthy?")
    command("voices", _cmd_voices, "the voices a recipe's speech.voice may name")
    subscribe = command("subscribe", _cmd_subscribe, "stream events (Ctrl-C to stop)")
    subscribe.add_argument("--slot", help="only this slot's events")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point of the `vortexctl` console script; returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0)
    args.socket = getattr(args, "socket", None) or _default_socket()
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", getattr(args, "default_timeout_s", DEFAULT_TIMEOUT_S))
    session = _Session(args, out, err)
    try:
        return args.run(session, args)
    except _Fail as exc:
        return exc.status
    except DaemonUnavailable as exc:
        print(f"error: {exc}", file=err)
        print(f"hint: {exc.hint}", file=err)
        return EXIT_USAGE
    except ProtocolViolation as exc:
        print(f"error: protocol: {exc}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR  # e.g. `vortexctl subscribe | head`


if __name__ == "__main__":
    sys.exit(main())
