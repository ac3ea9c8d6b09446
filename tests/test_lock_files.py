"""The lock files README installs from: every requirement of pyproject.toml, pinned and hashed,
for each Python the project supports."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {"default": (ROOT / "requirements" / "default.txt", ()), "dev": (ROOT / "requirements" / "dev.txt", ("dev",))}
PYTHONS = ("3.11", "3.12")


def _environment(python: str, extra: str = "") -> dict[str, str]:
    """Marker variables of a Linux x86_64 CPython `python` (what the locks cover)."""
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_machine": "x86_64", "platform_python_implementation": "CPython",
            "implementation_name": "cpython", "platform_system": "Linux", "os_name": "posix", "extra": extra}


def read_lock(path: Path) -> list[tuple[Requirement, list[str]]]:
    """(requirement, sha256 hashes) of every entry of a pip requirements file with hashes."""
    entries = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec, *hashes = line.split(" --hash=")
        entries.append((Requirement(spec.strip()), [h.strip() for h in hashes]))
    return entries


def pins(path: Path, python: str) -> dict[str, Version]:
    """Name → pinned version of the entries that apply to `python`."""
    env = _environment(python)
    return {canonicalize_name(req.name): Version(str(next(iter(req.specifier))).lstrip("="))
            for req, _ in read_lock(path) if req.marker is None or req.marker.evaluate(env)}


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    """What pyproject.toml asks for: dependencies, the given extras, and the build backend."""
    specs = list(PYPROJECT["project"]["dependencies"]) + list(PYPROJECT["build-system"]["requires"])
    for extra in extras:
        specs += PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_package_is_one_exact_version_with_its_hashes(name: str) -> None:
    """Each entry pins `==` one version and carries sha256 hashes (pip's hash-checking mode)."""
    entries = read_lock(LOCKS[name][0])
    assert len(entries) > 20
    for req, hashes in entries:
        assert [s.operator for s in req.specifier] == ["=="], req
        assert hashes and all(h.startswith("sha256:") and len(h) == 7 + 64 for h in hashes), req


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("name", LOCKS)
def test_the_lock_satisfies_everything_pyproject_asks_for(name: str, python: str) -> None:
    """Every requirement of pyproject (for this lock's extras) is pinned, at a version it allows:
    a dependency added or narrowed without `requirements/lock` fails here, not on a user's machine."""
    path, extras = LOCKS[name]
    pinned = pins(path, python)
    for req in wanted(extras):
        if req.marker is not None and not req.marker.evaluate(_environment(python)):
            continue
        key = canonicalize_name(req.name)
        assert key in pinned, f"{req} is missing from {path.name} for Python {python}: run requirements/lock"
        assert req.specifier.contains(pinned[key], prereleases=True), \
            f"{path.name} pins {key} {pinned[key]} for Python {python}, pyproject asks {req}: run requirements/lock"


def test_python_311_takes_the_cpu_build_of_torch() -> None:
    """The dev lock's torch for 3.11 is the CPU build (a CUDA build is several GB CI must never pull)."""
    assert pins(LOCKS["dev"][0], "3.11")["torch"].local == "cpu"
