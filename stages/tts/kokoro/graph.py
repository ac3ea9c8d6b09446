"""Expose Kokoro's per-token durations as a graph output: the exact phoneme timeline.

Kokoro predicts how many 25 ms frames each input token lasts, expands the encoder output by
those counts, and decodes the expanded sequence into audio (600 samples per frame at 24 kHz).
The exported graph computes the counts in the encoder — a Round → Clip → Cast chain whose
result is taken from the batch by a Gather and fed to a CumSum — but does not return them.
Adding that Gather's output as a graph output (int64, one count per token, pads included) makes
the model report its own alignment, so sum(durations) × 600 equals the audio length exactly.

The patched model is cached beside its source, keyed by the source's identity, and written
atomically under the cache lock like the assembled model.
"""

from __future__ import annotations

from pathlib import Path

from stages.tts.kokoro import cache
from stages.tts.kokoro.assets import KokoroModelError

DURATIONS_OUTPUT = "durations"
"""Name of the added graph output."""
_CHAIN = ("Gather", "Cast", "Clip", "Round")  # walking back from the CumSum's input


def _duration_tensor(graph) -> str:
    """Name of the tensor holding the per-token frame counts, found by the graph's structure."""
    producer = {name: node for node in graph.node for name in node.output}
    matches = []
    for node in graph.node:
        if node.op_type != "CumSum" or not node.input:
            continue
        tensor, chain_ok = node.input[0], True
        for op_type in _CHAIN:
            source = producer.get(tensor)
            if source is None or source.op_type != op_type:
                chain_ok = False
                break
            tensor = source.input[0]
        if chain_ok:
            matches.append(node.input[0])
    if len(matches) != 1:
        raise LookupError(f"expected one Round→Clip→Cast→Gather→CumSum duration chain, found {len(matches)}")
    return matches[0]


def has_durations_output(model_path: Path) -> bool:
    """Whether the ONNX file already returns a `durations` output (read without loading weights)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return any(o.name == DURATIONS_OUTPUT for o in model.graph.output)


def expose_durations(source: Path, destination: Path) -> None:
    """Write a copy of the model at `source` to `destination` with the `durations` output added."""
    import onnx
    from onnx import TensorProto, helper

    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a damaged file
        raise KokoroModelError(f"cannot read the Kokoro model {source}: {exc}", source) from exc
    graph = model.graph
    try:
        tensor = _duration_tensor(graph)
    except LookupError as exc:
        raise KokoroModelError(f"cannot expose phoneme durations in {source}: {exc}; is this a Kokoro export?",
                               source) from exc
    # An Identity gives the output a stable name whatever the exporter called the tensor.
    graph.node.append(helper.make_node("Identity", [tensor], [DURATIONS_OUTPUT], name="vortex/durations"))
    graph.output.append(helper.make_tensor_value_info(DURATIONS_OUTPUT, TensorProto.INT64, None))
    entry = model.metadata_props.add()
    entry.key, entry.value = "vortex.patched_from", source.name
    onnx.save(model, str(destination))


def patched_model(source: Path, cache_dir: Path, source_key: str) -> Path:
    """The model at `source` with durations exposed, from the cache or made now (once, atomically).

    `source_key` identifies the source's content (its SHA-256, or path+size+mtime for an
    operator's file) so a changed model is patched again rather than served stale.
    """
    destination = cache_dir / f"{source.stem}.{source_key[:16]}.durations.onnx"
    if destination.is_file():
        return destination
    with cache.locked(cache_dir):
        if destination.is_file():
            return destination
        cache.remove_stale_temps(cache_dir)
        return cache.publish_file(destination, lambda temp: expose_durations(source, temp))
