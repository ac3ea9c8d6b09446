#!/usr/bin/env bash
# Run here (where MediaPipe and PyPI are) before the GPU call: what benchmarks/gpu/run.sh needs
# that the device machine lacks, in .gpu/ (ignored through .git/info/exclude; the call carries it):
# the structlog wheel, the LivePortrait vectors (../shared does not travel) and the astronaut's
# face landmarks (the device has no MediaPipe).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qxF '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl
structlog=$(grep -oP '^structlog==\K[^ ]+' requirements/default.txt)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .gpu/whl "structlog==$structlog"
cp -r ../shared/liveportrait .gpu/liveportrait
.venv/bin/python -c 'import numpy as np; from stages.image import load_actor
np.save(".gpu/astronaut_landmarks.npy", load_actor().landmarks_px)'
du -sh .gpu
