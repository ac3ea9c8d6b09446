"""Encode/decode speed, size and quality of a 45 s talking-head slot for each x264 preset.

Run from the repo root:  .venv/bin/python benchmarks/bench_encode.py [--presets ultrafast,veryfast]

The frames are a real portrait (../shared/faces, or scikit-image's astronaut) with head-like
motion: a slow sinusoidal sway and nod of the whole picture plus a mouth-region stretch every
few frames. That is harder on the encoder than the real warp (whose background is still), so
the figures are an upper bound on encode time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from stages.encode import decode_mp4, encode_mp4, probe_mp4  # noqa: E402

FPS = 24
N_FRAMES = 45 * FPS
SAMPLE_RATE_HZ = 24_000


def _portrait() -> np.ndarray:
    """A 512² RGB portrait: the first shared face photo, else the built-in astronaut."""
    import cv2

    shared = REPO_ROOT.parent / "shared" / "faces" / "s12.jpg"
    if shared.is_file():
        image = cv2.cvtColor(cv2.imread(str(shared)), cv2.COLOR_BGR2RGB)
    else:
        from skimage import data

        image = data.astronaut()
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 4, (image.shape[1] - side) // 2
    return cv2.resize(image[top : top + side, left : left + side], (512, 512), interpolation=cv2.INTER_AREA)


def talking_frames(n_frames: int = N_FRAMES, seed: int = 0) -> np.ndarray:
    """(n_frames, 512, 512, 3) uint8 frames: the portrait's head swaying, nodding and stretching.

    Like the mesh warp, only a soft ellipse around the head moves; the background stays put.
    """
    import cv2

    portrait = _portrait()
    rng = np.random.default_rng(seed)
    t_s = np.arange(n_frames) / FPS
    angle_deg = 2.0 * np.sin(2 * np.pi * 0.23 * t_s + rng.uniform(0, 6))
    shift_x_px = 3.0 * np.sin(2 * np.pi * 0.17 * t_s + rng.uniform(0, 6))
    shift_y_px = 2.0 * np.sin(2 * np.pi * 0.31 * t_s + rng.uniform(0, 6))
    stretch = 1.0 + 0.04 * np.abs(np.sin(2 * np.pi * 3.0 * t_s))  # syllable-rate vertical stretch
    yy, xx = np.mgrid[0:512, 0:512]
    head = np.clip(1.6 - np.hypot((xx - 256) / 150.0, (yy - 230) / 200.0), 0, 1)[..., None].astype(np.float32)
    still = portrait.astype(np.float32) * (1 - head)
    moved = np.empty_like(portrait)
    frames = np.empty((n_frames, 512, 512, 3), dtype=np.uint8)
    for i in range(n_frames):  # one cv2 call per frame: this is test content, not the product
        matrix = cv2.getRotationMatrix2D((256, 256), float(angle_deg[i]), 1.0)
        matrix[1, :2] *= stretch[i]
        matrix[:, 2] += (shift_x_px[i], shift_y_px[i] + 256 * (1 - stretch[i]))
        cv2.warpAffine(portrait, matrix, (512, 512), dst=moved, borderMode=cv2.BORDER_REFLECT)
        frames[i] = still + moved * head
    return frames


def speech_like_audio(n_samples: int, seed: int = 0) -> np.ndarray:
    """Noise shaped into 4 Hz syllables, with a click at 10.000 s to check alignment."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(n_samples) / SAMPLE_RATE_HZ
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t_s), 0, None) ** 2
    audio = (0.2 * envelope * rng.standard_normal(n_samples)).astype(np.float32)
    audio[10 * SAMPLE_RATE_HZ - 240 : 10 * SAMPLE_RATE_HZ + 240] = 0.0
    audio[10 * SAMPLE_RATE_HZ] = 0.95
    return audio


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 arrays, in dB."""
    mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def main() -> None:
    """Encode the same slot with each preset and print time, throughput, size, PSNR, alignment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="ultrafast,superfast,veryfast,faster")
    parser.add_argument("--crf", type=int, default=None)
    args = parser.parse_args()

    frames = talking_frames()
    audio = speech_like_audio(N_FRAMES * SAMPLE_RATE_HZ // FPS)
    print(f"{'preset':10} {'encode_s':>8} {'frames/s':>9} {'MB':>6} {'PSNR_dB':>8} {'decode_s':>8} {'click_ms':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets.split(","):
            path = Path(folder) / f"{preset}.mp4"
            kwargs = {"crf": args.crf} if args.crf is not None else {}
            stats = encode_mp4(frames, audio, path, fps=FPS, sample_rate_hz=SAMPLE_RATE_HZ, preset=preset, **kwargs)
            info = probe_mp4(path)
            assert info["frames"] == N_FRAMES and info["duration_s"] == 45.0, info
            started = time.perf_counter()
            decoded = decode_mp4(path)
            decode_s = time.perf_counter() - started
            window = decoded.audio[9 * SAMPLE_RATE_HZ : 11 * SAMPLE_RATE_HZ]
            click_ms = (np.argmax(np.abs(window)) + 9 * SAMPLE_RATE_HZ - 10 * SAMPLE_RATE_HZ) * 1000 / SAMPLE_RATE_HZ
            quality = psnr_db(decoded.frames[::24], frames[::24])
            print(f"{preset:10} {stats.encode_s:8.2f} {stats.frames_per_s:9.0f} {stats.file_bytes / 1e6:6.2f} "
                  f"{quality:8.2f} {decode_s:8.2f} {click_ms:8.2f}")


if __name__ == "__main__":
    main()
