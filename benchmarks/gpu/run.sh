#!/usr/bin/env bash
# The GPU checks of issues P6 and P8 in one device call (after benchmarks/gpu/prepare.sh):
#   run(command="bash benchmarks/gpu/run.sh", carry=[".gpu"], timeout_s=540)
# fidelity on CUDA (as loaded, and as the engine runs W and G), the gpu-marked tests (the arena's
# MemPool regions among them), the LivePortrait benchmark in its region, and what the verify
# stage running beside the warp costs it; the whole log comes back as $OUT/gpu-checks.log.
# Exit status: 0 when all passed.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 VORTEX_ASTRONAUT_LANDMARKS="$PWD/.gpu/astronaut_landmarks.npy"
log="${OUT:-/tmp}/gpu-checks.log"
status=0
step() {
    echo "== $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
}
step nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step python3 -m stages.warp.liveportrait.fidelity .gpu/liveportrait --device cuda
step python3 -m stages.warp.liveportrait.fidelity .gpu/liveportrait --device cuda --inference
step python3 -m pytest -q -p no:cacheprovider -m gpu tests/stages/warp/liveportrait tests/vram
step python3 benchmarks/bench_liveportrait_gpu.py --landmarks .gpu/astronaut_landmarks.npy --chunks auto,8,16 --profile
step python3 benchmarks/bench_overlap_gpu.py --landmarks .gpu/astronaut_landmarks.npy
exit $status
