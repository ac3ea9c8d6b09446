"""manifest.json: what a published slot says about itself (file hashes are added by publish_slot)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vortexd.recipe import Recipe


class ManifestBackends(Protocol):
    """What a manifest reads of the slot's stage backends (vortexd.pipeline.Backends is one):
    the warp backend's `name`, and Kokoro's `model_info()` when Kokoro spoke. Described here, not
    imported, because the pipeline imports this module."""

    @property
    def warp(self) -> Any:
        """The warp backend (its `name` goes in the manifest)."""

    @property
    def kokoro(self) -> Any:
        """The Kokoro TTS backend (its `model_info()` goes in the manifest)."""


class StageTimes(Protocol):
    """Wall-clock seconds per stage, in the order they ran (vortexd.pipeline.StageClock is one)."""

    seconds: dict[str, float]


def _plain(value: Any) -> Any:
    """JSON-ready copy of `value` (dataclasses, numpy scalars/arrays, paths)."""
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return dataclasses.asdict(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")

    return json.loads(json.dumps(value, default=default))


def input_hashes(recipe: Recipe) -> dict[str, str]:
    """sha256 of each input file the recipe names, by field (the daemon's are its spool copies,
    named by that same hash: the bytes accepted at submit)."""
    return {field: hashlib.sha256(path.read_bytes()).hexdigest() for field, path in recipe.input_files().items()}


def build_manifest(recipe: Recipe, backends: ManifestBackends, speech, plan, verdict, clock: StageTimes,
                   warnings_seen: list[str], actor_source: str, versions: dict[str, str],
                   inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The manifest.json content of a slot (file hashes are added by publish_slot).

    `inputs` is the record made at submit (vortexd.spool.snapshot_inputs: field → {path, sha256,
    bytes}, a library pick included); its hashes are listed as they are. Without it (a one-shot
    render) the files the recipe names are hashed here."""
    verdict_fields = dataclasses.asdict(verdict) if verdict is not None else None
    return _plain({
        "slot_id": recipe.slot_id,
        "recipe_sha256": recipe.content_hash(),
        "recipe": recipe.model_dump(mode="json"),
        "seed": recipe.motion.seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "video": {"fps": plan.fps, "frames": plan.n_frames, "duration_s": plan.n_frames / plan.fps,
                  "width": 512, "height": 512, "codec": "h264", "audio_codec": "aac",
                  "audio_sample_rate_hz": speech.sample_rate_hz},
        "backends": {"image": "flux" if actor_source.startswith("flux:") else "library",
                     "tts": speech.backend, "voice": speech.voice, "warp": backends.warp.name,
                     "verify": "objective+clip" if verdict_fields and verdict_fields.get("clip") else "objective",
                     "motion_source": plan.meta.get("source")},
        "actor_source": actor_source,
        "inputs": (hashes := input_hashes(recipe) if inputs is None
                   else {field: entry["sha256"] for field, entry in inputs.items()}),
        "driving": ({"sha256": hashes["motion.driving"], **plan.meta["driving"]}
                    if "driving" in plan.meta else None),
        "versions": versions,
        "models": {"tts": backends.kokoro.model_info()} if speech.backend == "kokoro" else {},
        "stage_seconds": {k: round(v, 4) for k, v in clock.seconds.items()},
        "verdict": verdict_fields,
        "warnings": warnings_seen,
    })
