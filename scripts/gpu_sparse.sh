#!/usr/bin/env bash
# GPU check for 2:4 sparsity: dense vs 2:4 FP16 TensorRT engines of one model, latency from trtexec.
#
#   scripts/gpu_sparse.sh [MODEL.onnx] [OUT_DIR]
#
# Without MODEL it uses tests/data/resnet50.graph.onnx with seeded weights (tests/weights.py). It writes
# OUT_DIR/NAME.sparse.onnx with `onnxprune sparsify` (magnitude, or SparseGPT with CALIB), the FP16 ONNX of
# both (`onnxprune build --save-onnx`, verified against float32), builds both engines with trtexec
# (--stronglyTyped; the sparse one with --sparsity=enable) and prints their latency. OUT_DIR defaults to out/.
# Environment:
#   PYTHON        the interpreter with onnxprune installed (default: .venv/bin/python, else python3)
#   TRTEXEC       trtexec (default: the one on PATH)
#   SHAPE         NAME:DIMS for a model with dynamic inputs (default input:32x3x224x224 for the sample)
#   CALIB         calibration data for sparsify --calib (optional)
#   MIN_CHANNELS  sparsify --min-channels (default 256)
# Needs an NVIDIA GPU with sparse Tensor Cores (Ampere or later), TensorRT and trtexec. Exits 1 with one line
# saying what is missing. Where TensorRT is absent nothing here can stand in: see the README.
set -euo pipefail

# shellcheck source=scripts/gpu_common.sh
source "$(dirname "$0")/gpu_common.sh" # cd to the root; PY, TRTEXEC, die, run_onnxprune
OUT=${2:-out}
MIN_CHANNELS=${MIN_CHANNELS:-256}

mkdir -p "$OUT"
if [[ $# -ge 1 ]]; then
    MODEL=$1
    SHAPE=${SHAPE:-}
else
    MODEL=$OUT/resnet50.onnx
    "$PY" -c "import sys; sys.path.insert(0, 'tests'); import onnx, weights; onnx.save(weights.load('resnet50'), sys.argv[1])" "$MODEL"
    SHAPE=${SHAPE:-input:32x3x224x224}
fi
[[ -f $MODEL ]] || die "$MODEL: no such file"
NAME=$(basename "$MODEL" .onnx)
SPARSE=$OUT/$NAME.sparse.onnx

calib_args=()
[[ -n ${CALIB:-} ]] && calib_args=(--calib "$CALIB")
shape_args=()
trtexec_shape=()
if [[ -n $SHAPE ]]; then
    shape_args=(--shape "$SHAPE")
    trtexec_shape=("--shapes=$SHAPE")
fi

run_onnxprune sparsify "$MODEL" -o "$SPARSE" --min-channels "$MIN_CHANNELS" ${calib_args[@]+"${calib_args[@]}"}

# The FP16 ONNX of each (build without TensorRT's Python package still writes it, then exits 1).
for model in "$MODEL" "$SPARSE"; do
    base=$(basename "$model" .onnx)
    rm -f "$OUT/$base.fp16.onnx" # a stale one from an earlier run must not pass for this run's
    log=$(run_onnxprune build "$model" -o "$OUT/$base.unused.plan" --backend tensorrt --fp16 --save-onnx "$OUT/$base.fp16.onnx" \
        ${shape_args[@]+"${shape_args[@]}"} 2>&1) || true
    [[ -f $OUT/$base.fp16.onnx ]] ||
        { printf '%s\n' "$log" | tail -5 >&2; die "could not write the FP16 ONNX of $model"; }
done

# Prints trtexec's mean GPU compute time in ms.
build_and_time() {
    local onnx=$1 plan=$2 log latency
    shift 2
    log=$("$TRTEXEC" --onnx="$onnx" --saveEngine="$plan" --stronglyTyped "$@" \
        ${trtexec_shape[@]+"${trtexec_shape[@]}"} --warmUp=500 --duration=10 2>&1) ||
        { printf '%s\n' "$log" | tail -20 >&2; die "trtexec failed on $onnx"; }
    latency=$(sed -n 's/.*GPU Compute Time:.* mean = \([0-9.eE+-]*\) ms.*/\1/p' <<<"$log" | tail -1)
    [[ -n $latency ]] || die "cannot read the GPU compute time in trtexec's output for $onnx"
    echo "$latency"
}

dense_ms=$(build_and_time "$OUT/$NAME.fp16.onnx" "$OUT/$NAME.fp16.plan")
sparse_ms=$(build_and_time "$OUT/$NAME.sparse.fp16.onnx" "$OUT/$NAME.sparse.fp16.plan" --sparsity=enable)

printf '\n%-32s %-22s %14s\n' "model" "engine" "latency (ms)"
printf '%-32s %-22s %14.3f\n' "$NAME" "fp16 dense" "$dense_ms"
printf '%-32s %-22s %14.3f\n' "$NAME.sparse" "fp16 2:4 (sparsity on)" "$sparse_ms"
awk -v a="$dense_ms" -v b="$sparse_ms" 'BEGIN { if (b > 0) printf "speed-up: %.2fx\n", a / b }'
