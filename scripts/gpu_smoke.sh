#!/usr/bin/env bash
# GPU smoke test: prune a model, build FP16 TensorRT plans of the original and the pruned model, time both.
#
#   scripts/gpu_smoke.sh [MODEL.onnx] [OUT_DIR]
#
# Without MODEL it builds the sample models (models/build_samples.py OUT_DIR) and uses OUT_DIR/resnet_slim.onnx.
# OUT_DIR defaults to out/. Environment:
#   PYTHON    the interpreter with onnxprune installed (default: .venv/bin/python, else python3)
#   TRTEXEC   trtexec (default: the one on PATH)
#   SHAPE     NAME:DIMS for a model with dynamic inputs, e.g. input:1x3x224x224
#   RATIO     pruning ratio (default 0.5)
# Needs an NVIDIA GPU, TensorRT's Python package (pip install 'onnxprune[trt]'; the wheels come from NVIDIA's
# index, pypi.nvidia.com) and trtexec. Exits 1 with one line saying what is missing.
set -euo pipefail

# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh" # cd to the root; PY, TRTEXEC, die, run_onnxprune
"$PY" -c "from onnxprune.devices import has_module as h; raise SystemExit(not h('tensorrt'))" ||
    die "TensorRT's Python package is missing: pip install 'onnxprune[trt]' (wheels from pypi.nvidia.com)"
OUT=${2:-out}
RATIO=${RATIO:-0.5}
SHAPE=${SHAPE:-}

# ---- the models -------------------------------------------------------------------------------------------
mkdir -p "$OUT"
if [[ $# -ge 1 ]]; then
    MODEL=$1
else
    "$PY" models/build_samples.py "$OUT"
    MODEL=$OUT/resnet_slim.onnx
fi
[[ -f $MODEL ]] || die "$MODEL: no such file"
NAME=$(basename "$MODEL" .onnx)
PRUNED=$OUT/$NAME.pruned.onnx

shape_args=()
trtexec_shape=()
if [[ -n $SHAPE ]]; then
    shape_args=(--shape "$SHAPE")
    trtexec_shape=("--shapes=$SHAPE")
fi

run_onnxprune prune "$MODEL" -o "$PRUNED" --ratio "$RATIO"
for model in "$MODEL" "$PRUNED"; do
    run_onnxprune build "$model" -o "$OUT/$(basename "$model" .onnx).fp16.plan" --fp16 --backend tensorrt \
        ${shape_args[@]+"${shape_args[@]}"}
done

# ---- timing -----------------------------------------------------------------------------------------------
# Prints "latency_ms throughput_qps": trtexec's mean GPU compute time and its throughput.
time_engine() {
    local log latency throughput
    log=$("$TRTEXEC" --loadEngine="$1" ${trtexec_shape[@]+"${trtexec_shape[@]}"} --warmUp=500 --duration=5 2>&1) ||
        { printf '%s\n' "$log" | tail -20 >&2; die "trtexec failed on $1"; }
    latency=$(sed -n 's/.*GPU Compute Time:.* mean = \([0-9.eE+-]*\) ms.*/\1/p' <<<"$log" | tail -1)
    throughput=$(sed -n 's/.*Throughput: \([0-9.eE+-]*\) qps.*/\1/p' <<<"$log" | tail -1)
    [[ -n $latency && -n $throughput ]] || die "cannot read the timings in trtexec's output for $1"
    echo "$latency $throughput"
}

# Command substitution, not a process substitution: a failed timing must stop the script (set -e).
base=$(time_engine "$OUT/$NAME.fp16.plan")
pruned=$(time_engine "$OUT/$NAME.pruned.fp16.plan")
read -r base_ms base_qps <<<"$base"
read -r pruned_ms pruned_qps <<<"$pruned"

printf '\n%-32s %-14s %14s %18s\n' "model" "engine" "latency (ms)" "throughput (qps)"
printf '%-32s %-14s %14.3f %18.1f\n' "$NAME" "fp16" "$base_ms" "$base_qps"
printf '%-32s %-14s %14.3f %18.1f\n' "$NAME.pruned (ratio $RATIO)" "fp16" "$pruned_ms" "$pruned_qps"
awk -v a="$base_ms" -v b="$pruned_ms" 'BEGIN { if (b > 0) printf "speed-up: %.2fx\n", a / b }'
