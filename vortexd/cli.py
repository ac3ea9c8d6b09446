"""`vortexd` command line: `render` one slot now, or `serve` as the daemon."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import traceback
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
_OUR_PACKAGES = tuple(Path(__file__).resolve().parents[1] / name for name in ("vortexd", "stages", "vram"))


def _quiet_native_libraries(settings) -> None:
    # For the life of the process: the chatter comes whenever a face-mesh graph starts.
    if settings.native_chatter == "drop":
        from vortexd.native_stderr import drop_native_chatter

        drop_native_chatter()


def _render(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        result = _render_slot(args)
    except MemoryError as exc:
        # Anywhere: loading a library, the video slab, a stage's arrays. What is left after the
        # unwinding is enough to say so; a traceback would only say it less clearly.
        print(f"error: not enough memory to render {args.recipe}: {_memory_failure(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImportError as exc:
        if not _failed_to_map(exc):
            raise
        print(f"error: not enough memory to render {args.recipe}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(result, int):
        return result
    for warning in result.manifest.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({"slot_dir": str(result.slot_dir), "manifest": result.manifest}, indent=2))
    else:
        seconds = result.manifest["stage_seconds"]
        verdict = result.manifest.get("verdict") or {}
        print(f"published {result.slot_dir / 'video.mp4'}")
        # Not their sum: image and speech run side by side, encode and checks beside the warp.
        print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items())
              + f"  (wall {time.perf_counter() - started:.2f} s, loading the backends included)")
        if verdict:
            state = "passed" if verdict.get("passed") else "FAILED: " + "; ".join(verdict.get("problems", []))
            print(f"verify: {state}")
    return 0


def _render_slot(args: argparse.Namespace):
    """Render the slot `args` name: its RenderResult, or an exit status for a refusal it printed."""
    from stages.errors import StageInputError
    from vortexd.backends import BackendUnavailable
    from vortexd.progress import ProgressPrinter
    from vortexd.recipe import RecipeError, load_recipe
    from vortexd.render import render_slot
    from vortexd.settings import load_settings

    try:
        settings = load_settings(args.config, verify=False if args.no_verify else None)
        _quiet_native_libraries(settings)
        recipe = load_recipe(args.recipe, allowed_roots=list(settings.allowed_roots))
        progress = None if args.quiet else ProgressPrinter()
        return render_slot(recipe, settings, args.output, progress=progress)
    except (RecipeError, StageInputError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _memory_failure(exc: MemoryError) -> str:
    """What ran out of memory: the error's own words (numpy names the array it could not
    allocate), and the innermost Vortex function it happened in."""
    render = sys.modules.get("vortexd.render")  # imported by now if it raised; importing it here could fail
    if render is not None and isinstance(exc, render.NotEnoughMemory):
        return str(exc)  # the up-front check: it says what needs how much itself
    what = str(exc) or type(exc).__name__
    ours = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)
            if any(Path(frame.f_code.co_filename).resolve().is_relative_to(p) for p in _OUR_PACKAGES)]
    if ours:
        frame = ours[-1]
        module = frame.f_globals.get("__name__", "?")
        what += f" (in {module}.{frame.f_code.co_name})"
    return what


def _failed_to_map(exc: ImportError) -> bool:
    """True for a native library that could not be mapped under an address-space limit: the
    dynamic loader's ENOMEM, reported as an ImportError."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    return limit != resource.RLIM_INFINITY and "failed to map segment" in str(exc)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from vortexd.daemon import serve
    from vortexd.settings import load_settings

    try:
        settings = load_settings(args.config)
    except (ValidationError, OSError, ValueError) as exc:
        print(f"error: settings: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _quiet_native_libraries(settings)
    return serve(settings)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `vortexd`."""
    parser = argparse.ArgumentParser(prog="vortexd", description="Vortex talking-head video engine")
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render one slot now, without the daemon")
    render.add_argument("recipe", type=Path, help="recipe file (.toml or .json)")
    render.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    render.add_argument("-c", "--config", type=Path, help="settings TOML file")
    render.add_argument("--json", action="store_true", help="print the manifest as JSON")
    render.add_argument("--quiet", action="store_true", help="no progress display")
    render.add_argument("--no-verify", action="store_true", help="skip the verify stage")
    render.set_defaults(run=_render)

    daemon = commands.add_parser("serve", help="run the daemon (systemd Type=notify)")
    daemon.add_argument("-c", "--config", type=Path, help="settings TOML file (VORTEX_* env overrides it)")
    daemon.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vortexd` console script."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
