"""The warp stage: backends that turn an actor and a motion plan into video frames.

Backends are loaded by name, lazily, so importing the stage never pulls in a backend's heavy
dependencies (the LivePortrait backend needs torch; the mesh backend only numpy and OpenCV).
"""

from __future__ import annotations

import importlib

from stages.errors import StageInputError
from stages.warp.base import PreparedWarp, WarpBackend

_BACKENDS = {"mesh": ("stages.warp.mesh", "MeshWarpBackend")}
"""Backend name → (module, class). Other backends register here as they land."""


def load_backend(name: str) -> WarpBackend:
    """Import and construct the warp backend called `name` (e.g. "mesh")."""
    try:
        module_name, class_name = _BACKENDS[name]
    except KeyError:
        raise StageInputError("warp.backend", f"unknown warp backend {name!r}",
                              known=sorted(_BACKENDS)) from None
    return getattr(importlib.import_module(module_name), class_name)(name=name)


__all__ = ["PreparedWarp", "WarpBackend", "load_backend"]
