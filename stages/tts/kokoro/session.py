"""One onnxruntime session of the patched Kokoro model: symbols in, audio and durations out.

Sessions run on one intra-op thread. Measured on this class of machine, two single-thread
sessions in two processes run side by side at nearly full speed each, while two intra-op
threads in one session were slower than one; parallelism therefore comes from processes
(see workers.py), never from threads inside a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.tts.kokoro.assets import KokoroModelError
from stages.tts.kokoro.graph import DURATIONS_OUTPUT

PAD_ID = 0
"""Kokoro pads every call with token 0 at both ends."""


@dataclass(frozen=True)
class RawChunk:
    """What one model call produced: audio and one frame count per input token, pads included."""

    audio: np.ndarray  # (n,) float32 at 24 kHz
    durations: np.ndarray  # (n_tokens + 2,) int64 frames


@dataclass(frozen=True)
class _Signature:
    tokens: str
    style: str
    speed: str
    speed_dtype: np.dtype
    audio: str


def _signature(session) -> _Signature:
    # Exports name the inputs differently ("tokens" / "input_ids", "audio" / "waveform"), so the
    # roles are recognised by type: int64 ids, a 2-D float style, a 1-D speed.
    tokens = style = speed = None
    speed_dtype = np.dtype(np.float32)
    for item in session.get_inputs():
        if item.type == "tensor(int64)" and tokens is None:
            tokens = item.name
        elif item.type.startswith("tensor(float") and len(item.shape) == 2:
            style = item.name
        elif len(item.shape) <= 1:
            speed = item.name
            speed_dtype = np.dtype(np.int32 if "int32" in item.type else np.float32)
    audio = next((o.name for o in session.get_outputs() if o.type.startswith("tensor(float")), None)
    outputs = {o.name for o in session.get_outputs()}
    if None in (tokens, style, speed, audio) or DURATIONS_OUTPUT not in outputs:
        found = [f"{i.name}:{i.type}{i.shape}" for i in session.get_inputs()]
        raise KokoroModelError(
            f"not a Kokoro model with exposed durations (inputs {found}, outputs {sorted(outputs)})")
    return _Signature(tokens, style, speed, speed_dtype, audio)


class KokoroSession:
    """The patched model loaded for CPU inference on `threads` intra-op threads (1 recommended)."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # the int8 export triggers harmless shape-inference warnings
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise KokoroModelError(f"onnxruntime cannot load {model_path}: {exc}", model_path) from exc
        try:
            self._io = _signature(self._session)
        except KokoroModelError as exc:
            raise KokoroModelError(f"{model_path}: {exc}", model_path) from exc
        self.model_path = Path(model_path)

    def run(self, token_ids: Sequence[int], style: np.ndarray, speed: float) -> RawChunk:
        """Speak `token_ids` (no pads) with a (1, 256) `style` at `speed` (1.0 = the voice's pace)."""
        ids = np.asarray(token_ids, dtype=np.int64)
        feed = {
            self._io.tokens: np.concatenate([[PAD_ID], ids, [PAD_ID]]).astype(np.int64)[None, :],
            self._io.style: np.asarray(style, dtype=np.float32).reshape(1, -1),
            self._io.speed: np.array([speed], dtype=self._io.speed_dtype),
        }
        audio, durations = self._session.run([self._io.audio, DURATIONS_OUTPUT], feed)
        return RawChunk(np.asarray(audio, dtype=np.float32).reshape(-1), np.asarray(durations, np.int64).reshape(-1))
