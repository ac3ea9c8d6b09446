"""The lock files README installs from: every requirement of pyproject.toml, pinned and hashed,
for each Python the project supports, each file naming the one index its pins come from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PYPI = "https://pypi.org/simple"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# name → (files installed together, pyproject extras they cover)
LOCKS = {"default": (("default.txt",), ()), "dev": (("dev.txt", "torch-cpu.txt"), ("dev",))}
PYTHONS = ("3.11", "3.12")
# Distributions only a CUDA build of torch needs: CI must never download them.
CUDA_ONLY = re.compile(r"nvidia-.*|cuda-.*|triton|pytorch-triton")


def _environment(python: str, extra: str = "") -> dict[str, str]:
    """Marker variables of a Linux x86_64 CPython `python` (what the locks cover)."""
    return {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
            "platform_machine": "x86_64", "platform_python_implementation": "CPython",
            "implementation_name": "cpython", "platform_system": "Linux", "os_name": "posix", "extra": extra}


def read_lock(path: Path) -> list[tuple[Requirement, list[str]]]:
    """(requirement, sha256 hashes) of every entry of a pip requirements file with hashes
    (comments and option lines such as `--index-url` are not entries)."""
    entries = []
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        spec, *hashes = line.split(" --hash=")
        entries.append((Requirement(spec.strip()), [h.strip() for h in hashes]))
    return entries


def options(path: Path) -> list[str]:
    """The option lines of a requirements file (`--index-url URL`, …): they apply to its whole pip call."""
    return [line.strip() for line in path.read_text().splitlines() if line.startswith("-")]


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


def lock_files() -> list[Path]:
    """Every lock file README installs from."""
    return sorted({REQUIREMENTS / name for files, _ in LOCKS.values() for name in files})


@pytest.mark.parametrize("path", lock_files(), ids=lambda p: p.name)
def test_every_locked_package_is_one_exact_version_with_its_hashes(path: Path) -> None:
    """Each entry pins `==` one version and carries sha256 hashes (pip's hash-checking mode)."""
    entries = read_lock(path)
    assert entries
    for req, hashes in entries:
        assert [s.operator for s in req.specifier] == ["=="], req
        assert hashes and all(h.startswith("sha256:") and len(h) == 7 + 64 for h in hashes), req


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("name", LOCKS)
def test_the_lock_satisfies_everything_pyproject_asks_for(name: str, python: str) -> None:
    """Every requirement of pyproject (for this lock's extras) is pinned, at a version it allows:
    a dependency added or narrowed without `requirements/lock` fails here, not on a user's machine."""
    files, extras = LOCKS[name]
    pinned: dict[str, Version] = {}
    for file in files:
        twice = pinned.keys() & pins(REQUIREMENTS / file, python).keys()
        assert not twice, f"{sorted(twice)} pinned in two of {files}: one pip call would undo the other"
        pinned |= pins(REQUIREMENTS / file, python)
    for req in wanted(extras):
        if req.marker is not None and not req.marker.evaluate(_environment(python)):
            continue
        key = canonicalize_name(req.name)
        assert key in pinned, f"{req} is missing from {' + '.join(files)} for Python {python}: run requirements/lock"
        assert req.specifier.contains(pinned[key], prereleases=True), \
            f"{' + '.join(files)} pins {key} {pinned[key]} for Python {python}, pyproject asks {req}: run requirements/lock"


@pytest.mark.parametrize("path", lock_files(), ids=lambda p: p.name)
def test_each_lock_names_its_index_in_its_header(path: Path) -> None:
    """A reader learns where every pin comes from at the top of the file; a file that sets an index
    sets exactly the one its header names (an extra index would apply to all its pins)."""
    header = "".join(line + "\n" for line in path.read_text().splitlines()[:12] if line.startswith("#"))
    indexes = [o.split()[1] for o in options(path) if o.startswith(("--index-url", "-i ", "--extra-index-url"))]
    if path.name == "torch-cpu.txt":
        assert TORCH_INDEX in header and indexes == [TORCH_INDEX]
    else:
        assert PYPI in header and indexes == [], f"{path.name}: its pins are PyPI's; an index line would slow every pin"


@pytest.mark.parametrize("python", PYTHONS)
def test_torch_is_the_cpu_build_for_every_python(python: str) -> None:
    """The tests' torch is the CPU build, one hash per supported Python's wheel; no lock holds
    PyPI's torch or a CUDA library (several GB CI must never pull)."""
    torch = [(req, hashes) for req, hashes in read_lock(REQUIREMENTS / "torch-cpu.txt") if req.name == "torch"]
    assert len(torch) == 1 and len(torch[0][1]) == len(PYTHONS)
    assert pins(REQUIREMENTS / "torch-cpu.txt", python)["torch"].local == "cpu"
    for path in lock_files():
        if path.name != "torch-cpu.txt":
            assert "torch" not in pins(path, python), path.name
            assert not [n for n in pins(path, python) if CUDA_ONLY.fullmatch(n)], \
                f"{path.name} holds CUDA packages: name them in requirements/cuda-only.txt and run requirements/lock"


def test_ci_runs_exactly_readmes_test_command() -> None:
    """`.ci/run` is README's test command, word for word: what a newcomer runs is what CI tested."""
    readme = [line for line in (ROOT / "README.md").read_text().splitlines()
              if line.startswith("python3 -m venv") and "pytest" in line]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(readme) == 1 and ci == readme
    assert "requirements/torch-cpu.txt" in readme[0] and "requirements/dev.txt" in readme[0]
