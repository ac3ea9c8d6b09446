"""Checks a local Flux weights folder (the diffusers layout) before diffusers is asked to load it.

diffusers reports a missing piece of a local folder with a hub-oriented message (or a long
traceback) that does not say which setting is wrong. Checking the layout ourselves first lets
the daemon refuse with one line naming `flux_weights_dir` and the exact missing path.

The layout is that of black-forest-labs/FLUX.1-schnell: model_index.json names every component
and its class; each component is a sub-folder (transformer/, vae/, text_encoder/ (CLIP-L),
text_encoder_2/ (T5), tokenizer/, tokenizer_2/, scheduler/).
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.errors import StageInputError

FIELD = "flux_weights_dir"
"""The settings key a bad weights folder is reported against."""

MODEL_INDEX = "model_index.json"

REQUIRED_COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                       "scheduler")
"""What FluxPipeline cannot run without; model_index.json must name each of them."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_WEIGHT_INDEX_SUFFIX = ".index.json"


def _missing(message: str, path: Path) -> StageInputError:
    return StageInputError(FIELD, f"{message}: {path}", path=str(path))


def _config_file(class_name: str) -> str:
    """The file every saved component of this class has (schedulers and tokenizers differ from models)."""
    if class_name.endswith("Scheduler"):
        return "scheduler_config.json"
    if "Tokenizer" in class_name:
        return "tokenizer_config.json"
    return "config.json"


def _check_weights(folder: Path) -> None:
    """A model folder holds its weights: one file, or every shard its index lists."""
    indexes = sorted(folder.glob(f"*{_WEIGHT_INDEX_SUFFIX}"))
    if indexes:
        # A sharded checkpoint: a missing shard would otherwise only show up half-way through loading.
        shards = set(json.loads(indexes[0].read_text(encoding="utf-8")).get("weight_map", {}).values())
        for shard in sorted(shards):
            if not (folder / shard).is_file():
                raise _missing("a weight shard listed in the index is missing", folder / shard)
        return
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file()):
        raise _missing("no weight file (*.safetensors or *.bin) in the component folder", folder)


def check_weights_dir(weights_dir: Path) -> dict[str, str]:
    """Verify that `weights_dir` holds a complete Flux pipeline; return {component: class name}.

    Raises StageInputError on field "flux_weights_dir" naming the first missing path: the
    folder, model_index.json, a component folder, its config file, or its weights.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise _missing("the Flux weights folder does not exist", weights_dir)
    index_path = weights_dir / MODEL_INDEX
    if not index_path.is_file():
        raise _missing("model_index.json is missing (not a diffusers pipeline folder)", index_path)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageInputError(FIELD, f"cannot read {index_path}: {exc}", path=str(index_path)) from exc
    for name in REQUIRED_COMPONENTS:
        if name not in index:
            raise StageInputError(FIELD, f"{index_path} names no {name!r} component", path=str(index_path))

    components: dict[str, str] = {}
    for name, entry in index.items():
        # Entries are [library, class]; private keys ("_class_name") and [null, null] (an
        # optional component left out, e.g. image_encoder) have no folder.
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
            continue
        folder = weights_dir / name
        if not folder.is_dir():
            raise _missing(f"the {name} component folder is missing", folder)
        config = folder / _config_file(entry[1])
        if not config.is_file():
            raise _missing(f"the {name} component has no {config.name}", config)
        if config.name == "config.json":
            _check_weights(folder)
        components[name] = entry[1]
    return components
