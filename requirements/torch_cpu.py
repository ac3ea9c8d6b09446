#!/usr/bin/env python3
"""Write requirements/torch-cpu.txt: torch's CPU build pinned by the PyTorch CPU index's hashes.

PyPI carries only CUDA builds of Linux torch (several GB); the CPU build lives on the PyTorch CPU
index alone. The dev lock (requirements/dev.txt, PyPI only) therefore leaves torch out, and this
file pins it: the version pyproject.toml asks for, with the index's sha256 of the CPython 3.11 and
3.12 manylinux x86_64 wheels. `requirements/lock` runs it; standard library only.

    python3 requirements/torch_cpu.py [--index URL]

Where the index cannot be reached, a torch-cpu.txt that already pins the wanted version is kept
as it is (and the script says so); one that pins another version is an error.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "requirements" / "torch-cpu.txt"
INDEX = "https://download.pytorch.org/whl/cpu"
PYTHONS = ("cp311", "cp312")


class _Links(HTMLParser):
    """The href of every anchor of a PEP 503 simple-index page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Keep an anchor's href."""
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def wanted_version(pyproject: Path) -> str:
    """The one torch version pyproject's extras pin (`torch==X`); every extra must agree."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    found = {m.group(1) for specs in extras.values() for spec in specs
             if (m := re.fullmatch(r"torch\s*==\s*([0-9.]+)", spec.strip()))}
    if len(found) != 1:
        raise SystemExit(f"pyproject.toml's extras must pin torch to one exact version, found {sorted(found) or 'none'}")
    return found.pop()


def wheel_hashes(index: str, version: str) -> dict[str, str]:
    """{wheel file name: sha256} of the `version`+cpu manylinux x86_64 wheels for PYTHONS, as the
    index's torch page lists them (the `#sha256=` of each link)."""
    page_url = f"{index.rstrip('/')}/torch/"
    if page_url.startswith("file:"):  # a folder index on disk, as pip reads one
        page_url += "index.html"
    with urllib.request.urlopen(page_url, timeout=30) as page:
        parser = _Links()
        parser.feed(page.read().decode())
    wheels: dict[str, str] = {}
    for href in parser.hrefs:
        url, _, fragment = href.partition("#sha256=")
        name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        for tag in PYTHONS:
            if re.fullmatch(rf"torch-{re.escape(version)}\+cpu-{tag}-{tag}-manylinux[0-9_]*_x86_64\.whl", name) \
                    and re.fullmatch(r"[0-9a-f]{64}", fragment):
                wheels[name] = fragment
    missing = [tag for tag in PYTHONS if not any(f"-{tag}-" in name for name in wheels)]
    if missing:
        raise SystemExit(f"{index}/torch/ lists no torch {version}+cpu manylinux x86_64 wheel (with its sha256) for {missing}")
    return wheels


def render(version: str, wheels: dict[str, str]) -> str:
    """The text of torch-cpu.txt: a header naming the index and the wheels, the index line, the pin."""
    names = "".join(f"#   {hash_}  {name}\n" for name, hash_ in sorted(wheels.items()))
    hashes = " \\\n".join(f"    --hash=sha256:{hash_}" for _, hash_ in sorted(wheels.items()))
    return (
        "# torch, CPU build, from the PyTorch CPU index (https://download.pytorch.org/whl/cpu), the only\n"
        "# index that has it: PyPI's Linux torch is a CUDA build of several GB. Install it with its own pip\n"
        "# call, without dependencies (they are pinned in requirements/dev.txt, from PyPI), so that the index\n"
        "# below serves this one package:\n"
        "#   .venv/bin/pip install -q --no-deps -r requirements/torch-cpu.txt\n"
        "# The hashes are the index's sha256 of these wheels (CPython 3.11 and 3.12, Linux x86_64):\n"
        f"{names}"
        "# Written by requirements/lock (requirements/torch_cpu.py) from the version pyproject.toml pins.\n"
        f"--index-url {INDEX}\n"
        "--only-binary :all:\n"
        f"torch=={version}+cpu \\\n{hashes}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Write OUTPUT from the index, or keep it when the index is unreachable and it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=INDEX, help="a PEP 503 index holding torch's CPU wheels")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    version = wanted_version(ROOT / "pyproject.toml")
    try:
        wheels = wheel_hashes(args.index, version)
    except (urllib.error.URLError, OSError) as exc:
        current = args.output.read_text() if args.output.exists() else ""
        if f"\ntorch=={version}+cpu " not in current:
            print(f"error: {args.index} unreachable ({exc}) and {args.output.name} does not pin torch {version}+cpu",
                  file=sys.stderr)
            return 1
        print(f"{args.output.name}: kept (pins torch {version}+cpu; {args.index} unreachable, hashes not re-read)")
        return 0
    args.output.write_text(render(version, wheels))
    print(f"locked: {args.output.name} (torch {version}+cpu, {len(wheels)} wheels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
