#!/usr/bin/env bash
# Issue P13's GPU kit in two device calls (after `bash benchmarks/gpu/prepare.sh` here). Make the
# second call at once after the first (the machine stays warm 30 s; each call also stands alone):
#
#   run(command="bash benchmarks/gpu/run.sh warp", carry=[".gpu/call1"], timeout_s=380)
#   run(command="bash benchmarks/gpu/run.sh daemon", carry=[".gpu/call2"], timeout_s=305)
#
# then here: python3 benchmarks/gpu/collect.py <files_at of call 1> <files_at of call 2>
# (writes benchmarks/results/gpu/<date>-<card>.json; commit it) and
# python3 benchmarks/gpu/results_table.py for README's GPU table. docs/gpu-kit.md says more.
#
# warp:    fidelity on CUDA (as loaded, and as the engine runs W and G), the gpu-marked tests, the
#          LivePortrait benchmark (chunk from the budget and 16, kernels profile) → liveportrait.json
# daemon:  the real vortexd on CUDA (LivePortrait full-size, CLIP fp16, espeak-ng) fed by vortexctl,
#          5 slots overlapping + 2 alone at a 15 s cadence, READY cold and warm → daemon.json
# overlap: (optional, with .gpu/call1) the CLIP ensemble at full size verifying beside the warp
# Every step has its own time cap so the call ends with what was measured: $OUT/steps.tsv (step,
# exit status, seconds), meta.json, the JSON files and the whole log (gpu-<mode>.log).
# Exit status: 0 when every step passed.
set -uo pipefail
mode=${1:?usage: run.sh warp|daemon|overlap}
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
log="$out/gpu-$mode.log"
call=$([ "$mode" = daemon ] && echo call2 || echo call1)
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 VORTEX_ASTRONAUT_LANDMARKS="$PWD/.gpu/call1/astronaut_landmarks.npy"
export GLOG_minloglevel=2 TF_CPP_MIN_LOG_LEVEL=2
mkdir -p /tmp/site
if [ "$mode" = daemon ]; then
    # Python's own xz reader: the image need not have the xz tool.
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
        .gpu/call2/site.tar.xz /tmp/site || exit 1
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/call1/whl/*.whl || exit 1
fi
python3 - "$out/meta.json" "$call" <<'EOF'
import datetime, json, pathlib, subprocess, sys, torch
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except OSError as exc:  # no driver tools: say so in the record rather than lose the run's metadata
    smi = f"nvidia-smi: {exc}"
commit = pathlib.Path(f".gpu/{sys.argv[2]}/commit")
pathlib.Path(sys.argv[1]).write_text(json.dumps({
    "commit": commit.read_text().strip() if commit.exists() else None,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA", "torch": torch.__version__,
    "nvidia_smi": smi}))
EOF
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time cap, log it, record its exit status
    local name=$1 cap=$2 started rc
    shift 2
    echo "== $name (cap ${cap}s): $*" | tee -a "$log"
    started=$(date +%s%N)
    timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    local ms=$((($(date +%s%N) - started) / 1000000))
    printf '%s\t%s\t%d.%03d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >> "$out/steps.tsv"
    [ "$rc" = 0 ] || status=1
}
case $mode in
warp)
    step fidelity 40 python3 -m stages.warp.liveportrait.fidelity .gpu/call1/liveportrait --device cuda
    step fidelity-inference 40 python3 -m stages.warp.liveportrait.fidelity .gpu/call1/liveportrait --device cuda --inference
    step pytest-gpu 80 python3 -m pytest -q -p no:cacheprovider -m gpu tests/stages/warp/liveportrait tests/vram
    step bench-liveportrait 200 python3 benchmarks/bench_liveportrait_gpu.py --landmarks .gpu/call1/astronaut_landmarks.npy \
        --chunks auto,16 --slots 2 --no-startup --profile --json "$out/liveportrait.json"
    ;;
daemon)
    step daemon 290 python3 benchmarks/gpu/daemon_run.py --device cuda:0 --slots 5 --alone 2 --cadence 15 \
        --duration 45 --out "$out/daemon.json"
    ;;
overlap)
    step bench-overlap 240 python3 benchmarks/bench_overlap_gpu.py --landmarks .gpu/call1/astronaut_landmarks.npy \
        --json "$out/overlap.json"
    ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
echo "== steps (name, exit status, seconds)"  # last, so the reply's output tail always shows them
cat "$out/steps.tsv"
exit $status
