"""MediaPipe face finding: a detector gate, mesh landmarks on stills, and a tracker for video.

Two models, on purpose: the face *mesh* will happily fit a mesh to a dog's face, so the face
*detector* (trained to say "human face or not") decides whether there is a face at all, and the
mesh then gives the 478 landmarks.
"""

from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np

from stages.errors import NoFaceError

N_LANDMARKS = 478
"""468 face-mesh points plus 10 iris points (refine_landmarks=True)."""

_MIN_DETECTION_SCORE = 0.5
# MediaPipe graphs are not safe to call from two threads at once; stills are rare, so one lock.
_still_lock = threading.Lock()


def _solutions():
    """MediaPipe's legacy `solutions` package, with only the two solutions we use loaded.

    `import mediapipe` runs the package's __init__, which imports every solution, the Tasks API
    and, through `solutions.drawing_utils`, matplotlib.pyplot: ~0.85 s of CPU per process (and
    seconds more from a cold page cache), on the critical path of every slot's image stage.
    Face detection and the face mesh need neither: when nothing else has imported mediapipe yet,
    its two package modules (`mediapipe`, `mediapipe.python.solutions`) are registered without
    running their __init__ bodies, and the two solution modules are imported directly (~0.3 s).
    `mediapipe.python`, whose __init__ loads the framework bindings the solutions run on, is
    imported normally. Imported lazily: the daemon's other stages never need it.
    """
    if "mediapipe" not in sys.modules:
        _register_bare_package("mediapipe")
        import mediapipe.python  # noqa: F401  (the bindings: its __init__ must run)

        _register_bare_package("mediapipe.python.solutions")
    from mediapipe.python.solutions import face_detection, face_mesh

    return face_detection, face_mesh


def _register_bare_package(name: str) -> None:
    """Put package `name` in sys.modules (its __path__ set, so submodules import) without executing it."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"{name} is not installed", name=name)
    sys.modules[name] = importlib.util.module_from_spec(spec)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _to_pixels(landmarks, width: int, height: int) -> np.ndarray:
    points = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float32)
    # MediaPipe gives x, y normalised by width and height, and z roughly in units of width.
    return points * np.array([width, height, width], dtype=np.float32)


def face_detection_score(image: np.ndarray) -> float:
    """The best human-face detection score in `image` (0 when there is none)."""
    face_detection, _ = _solutions()
    rgb = _as_rgb_uint8(image)
    with _still_lock, face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=_MIN_DETECTION_SCORE
    ) as detector:
        result = detector.process(rgb)
    return max((d.score[0] for d in (result.detections or [])), default=0.0)


def detect_landmarks(image: np.ndarray, field: str = "actor.image") -> np.ndarray:
    """478 face landmarks (x, y, z) in pixels of `image`; NoFaceError when no human face is there."""
    rgb = _as_rgb_uint8(image)
    score = face_detection_score(rgb)
    if score < _MIN_DETECTION_SCORE:
        raise NoFaceError(field, "no human face found in the image", detection_score=round(score, 3))
    _, face_mesh = _solutions()
    with _still_lock, face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1, min_detection_confidence=0.5
    ) as mesh:
        result = mesh.process(rgb)
    if not result.multi_face_landmarks:
        raise NoFaceError(field, "a face was detected but its landmarks could not be fitted")
    return _to_pixels(result.multi_face_landmarks[0], rgb.shape[1], rgb.shape[0])


class FaceTracker:
    """Face-mesh landmarks over consecutive video frames (tracking mode, ~3 ms/frame on CPU).

    One tracker per video and per thread; close() it (or use it as a context manager).
    """

    def __init__(self) -> None:
        _, face_mesh = _solutions()
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        """(478, 3) landmarks in pixels of `frame`, or None when no face is found in it."""
        rgb = _as_rgb_uint8(frame)
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        return _to_pixels(result.multi_face_landmarks[0], rgb.shape[1], rgb.shape[0])

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._mesh.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track_landmarks(frames: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks in pixels over consecutive frames (one tracker); NaN rows where no face."""
    tracked = np.full((len(frames), N_LANDMARKS, 3), np.nan, dtype=np.float32)
    with FaceTracker() as tracker:
        for i in range(len(frames)):  # MediaPipe takes one image per call
            found = tracker.landmarks(frames[i])
            if found is not None:
                tracked[i] = found
    return tracked
