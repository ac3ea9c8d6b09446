"""Backends by name, as lazy "module:attribute" strings.

Importing this (or the daemon) imports no model code: a backend's module — and torch, for the
GPU backends — is imported only when that backend is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from stages.errors import StageInputError

BACKENDS: dict[str, dict[str, str]] = {
    "warp": {
        "mesh": "stages.warp.mesh:MeshWarpBackend",
        "liveportrait": "stages.warp.liveportrait.backend:LivePortraitBackend",
    },
    "tts": {
        "espeak": "stages.tts.espeak:EspeakBackend",
        "kokoro": "stages.tts.kokoro:KokoroBackend",
    },
    # The embedded image (the actor library) and verify (objective checks) are plain functions the
    # stages call; only their model backends are loaded by name.
    "image": {
        "flux": "stages.image.flux:FluxImageBackend",
    },
    "verify": {
        "clip": "stages.verify.clip.judge:ClipJudge",
    },
}


def backend_names(kind: str) -> list[str]:
    """The registered backend names of one stage kind ("warp", "tts", "image", "verify")."""
    return sorted(BACKENDS[kind])


def load_backend_class(kind: str, name: str) -> Any:
    """Import and return the class registered as `name` for stage `kind`."""
    try:
        target = BACKENDS[kind][name]
    except KeyError:
        raise StageInputError(f"{kind}_backend", f"unknown {kind} backend {name!r}; "
                              f"valid: {', '.join(backend_names(kind))}", valid=backend_names(kind)) from None
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)
