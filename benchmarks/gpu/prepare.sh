#!/usr/bin/env bash
# Run here (where MediaPipe and PyPI are) before the device calls of benchmarks/gpu/run.sh: what the
# device machine lacks, in .gpu/ (ignored through .git/info/exclude), one folder per call, each
# under the 64 MiB a call may carry together with the working tree:
#   .gpu/call1/  the warp checks: the LivePortrait vectors (../shared does not travel), the
#                astronaut's face landmarks (the device has no MediaPipe), the structlog wheel;
#   .gpu/call2/  the daemon: site.tar.xz, every package the daemon needs that the device lacks
#                (pydantic, structlog, PyAV, espeak-ng, MediaPipe without the pose/hand/holistic/
#                selfie models it never loads, protobuf 4, ftfy, diffusers), unpacked wheels for
#                CPython 3.12 packed with xz: the wheels alone are ~90 MB, packed ~50 MB.
# Prints each call's size and fails if one would not fit. Takes ~3 minutes of one core (xz).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
chmod -R u+w .gpu 2>/dev/null || true
rm -rf .gpu && mkdir -p .gpu/call1/whl .gpu/call2 .gpu/stage/whl
pin() { grep -hoP "^$1==\K[^ ]+" requirements/default.txt requirements/dev.txt | head -1; }
download() {  # wheels for the device: CPython 3.12, manylinux x86_64, no dependencies pulled in
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$@"
}

# Call 1: the warp checks (fidelity on CUDA, pytest -m gpu, the LivePortrait benchmark).
download .gpu/call1/whl "structlog==$(pin structlog)"
cp -r --no-preserve=mode ../shared/liveportrait .gpu/call1/liveportrait
.venv/bin/python -c 'import numpy as np; from stages.image import load_actor
np.save(".gpu/call1/astronaut_landmarks.npy", load_actor().landmarks_px)'

# Call 2: the daemon. Versions are the lock files' (av: its CPython 3.12 line).
av=$(grep -oP "^av==\K[^ ]+(?= ; python_full_version == '3.12)" requirements/default.txt)
download .gpu/stage/whl "av==$av" "mediapipe==$(pin mediapipe)" "protobuf==$(pin protobuf)" \
    "espeakng-loader==$(pin espeakng-loader)" "pydantic==$(pin pydantic)" "pydantic-core==$(pin pydantic-core)" \
    "pydantic-settings==$(pin pydantic-settings)" "annotated-types==$(pin annotated-types)" \
    "typing-inspection==$(pin typing-inspection)" "typing-extensions==$(pin typing-extensions)" \
    "python-dotenv==$(pin python-dotenv)" "structlog==$(pin structlog)" "ftfy==$(pin ftfy)" \
    "wcwidth==$(pin wcwidth)" "diffusers==$(pin diffusers)"
mkdir -p .gpu/stage/site
for wheel in .gpu/stage/whl/*.whl; do
    python3 -m zipfile -e "$wheel" .gpu/stage/site
done
# MediaPipe's solutions other than face detection and the face mesh (with its iris model) are
# never run by Vortex; their models are a third of the wheel (their Python modules stay: the
# solutions' base imports them).
for unused in pose_landmark pose_detection hand_landmark palm_detection holistic_landmark selfie_segmentation; do
    find ".gpu/stage/site/mediapipe/modules/$unused" -name '*.tflite' -delete
done
tar -C .gpu/stage/site -cf - . | xz -T2 -6 > .gpu/call2/site.tar.xz
git rev-parse HEAD > .gpu/commit
cp .gpu/commit .gpu/call1/commit && cp .gpu/commit .gpu/call2/commit
rm -rf .gpu/stage

tree=$(git ls-files -z | xargs -0 cat | wc -c)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r cat | wc -c)
status=0
for call in call1 call2; do
    carried=$(du -sb ".gpu/$call" | cut -f1)
    total=$((tree + untracked + carried))
    echo "$call: carries $((carried / 1048576)) MiB + working tree $(((tree + untracked) / 1048576)) MiB = $((total / 1048576)) MiB of 64"
    [ "$total" -lt $((64 * 1048576)) ] || { echo "$call is over the 64 MiB a call may carry" >&2; status=1; }
done
exit $status
