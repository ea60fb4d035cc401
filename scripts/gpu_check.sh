#!/usr/bin/env bash
# The prepared GPU check (issue 23), one run under 10 minutes on one GPU. It prints one table of:
#   - ONNX Runtime's CUDA execution provider: original vs pruned with aligned widths (--round-to 8) vs pruned
#     with misaligned ones (--round-to 1), at batch 1 and 32;
#   - TensorRT-RTX plans (original and aligned) run and timed where the GPU is one TensorRT-RTX compiles for
#     (compute capability 8.0, 8.6, 8.9, 12.x; not an H100's 9.0: then the record says so);
#   - TensorRT FP16 plans of the aligned model, dense vs 2:4 (onnxprune sparsify), and its bias maps behind the
#     BN (TensorRT's default form) vs as the Conv of a ones image (TensorRT-RTX's), where TensorRT is installed.
# A part this machine cannot run writes a "skipped: why" row instead of failing the run.
#
#   scripts/gpu_check.sh [--dry-run] [OUT_DIR]        (OUT_DIR defaults to out/gpu_check)
#
# --dry-run prints every command it would run, with the checks it would make, and writes nothing (it needs
# no GPU). Environment: PYTHON (default .venv/bin/python, else python3), TOPOLOGY (a tests/data model, default
# resnet50, seeded weights), RATIO (default 0.5).
set -euo pipefail

DRY=0
if [[ ${1:-} == --dry-run ]]; then
    DRY=1
    shift
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-out/gpu_check}
TOPOLOGY=${TOPOLOGY:-resnet50}
RATIO=${RATIO:-0.5}
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=$(command -v python3) || { echo "gpu_check: no Python found; set PYTHON" >&2; exit 1; }

die() {
    echo "gpu_check: $*" >&2
    exit 1
}

# run CMD...: runs it, or with --dry-run prints it (quoted as a shell would need it).
run() {
    if ((DRY)); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# run_to FILE CMD...: runs CMD with its standard output into FILE.
run_to() {
    local target=$1
    shift
    if ((DRY)); then
        run "$@"
        echo "  > $target"
    else
        "$@" >"$target"
    fi
}

# skip FILE WHY: the record of a part this machine cannot run.
skip() {
    if ((DRY)); then
        echo "  (would skip into $1 where: $2)"
    else
        "$PY" -c 'import json, sys; open(sys.argv[1], "w").write(json.dumps({"skipped": sys.argv[2]}))' "$1" "$2"
    fi
}

onnxprune() { run "$PY" -m onnxprune.cli "$@"; }

# probe CODE: exit status of a Python check; with --dry-run every probe answers yes, so that every step prints.
probe() {
    if ((DRY)); then
        echo "  (check: $1)"
        return 0
    fi
    "$PY" -c "$1" 2>/dev/null
}

"$PY" -c "import onnxprune" 2>/dev/null || die "onnxprune is not importable by $PY (make setup, or set PYTHON)"
probe "from onnxprune.devices import has_cuda_device as h; raise SystemExit(not h())" ||
    die "no CUDA device visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"

shape() { echo "input:${1}x3x224x224"; }
((DRY)) || mkdir -p "$OUT"

# ---- the models: the original (batch free), pruned with aligned and with misaligned widths ---------------
run "$PY" scripts/gpu_check.py models "$OUT" "$TOPOLOGY"
run_to /dev/null "$PY" -m onnxprune.cli prune "$OUT/original.onnx" -o "$OUT/aligned.onnx" --ratio "$RATIO" \
    --round-to 8 --shape "$(shape 1)" --no-verify --json
run_to /dev/null "$PY" -m onnxprune.cli prune "$OUT/original.onnx" -o "$OUT/misaligned.onnx" --ratio "$RATIO" \
    --round-to 1 --min-keep 1 --shape "$(shape 1)" --no-verify --json

# ---- ONNX Runtime, CUDA execution provider ---------------------------------------------------------------
for batch in 1 32; do
    if probe "from onnxprune.measure.bench import available_backends as a; raise SystemExit('cuda' not in a())"; then
        run_to "$OUT/ort_cuda_b$batch.json" "$PY" -m onnxprune.cli bench "$OUT/original.onnx" "$OUT/aligned.onnx" \
            "$OUT/misaligned.onnx" --backend cuda --shape "$(shape "$batch")" --min-seconds 3 --json
    else
        skip "$OUT/ort_cuda_b$batch.json" "no CUDA execution provider (pip install 'onnxprune[gpu]')"
    fi
done

# ---- TensorRT-RTX: built here (no GPU needed), run where the GPU is one it compiles for -------------------
profile=(--min-shape "$(shape 1)" --shape "$(shape 1)" --max-shape "$(shape 32)")
rtx_runs="from onnxprune.engine.backends import RTX; raise SystemExit(RTX.missing() or RTX.not_runnable())"
for model in original aligned; do
    if probe "from onnxprune.engine.backends import RTX; raise SystemExit(bool(RTX.missing()))"; then
        onnxprune build "$OUT/$model.onnx" -o "$OUT/$model.rtx.plan" --backend rtx "${profile[@]}"
    fi
    for batch in 1 32; do
        if probe "$rtx_runs"; then
            run "$PY" scripts/gpu_check.py time-plan "$OUT/$model.rtx.plan" "$OUT/$model.rtx.b$batch.time.json" \
                --shape "$(shape "$batch")" --rtx
        else
            skip "$OUT/$model.rtx.b$batch.time.json" "TensorRT-RTX is missing or does not run on this GPU"
        fi
    done
done

# ---- TensorRT: FP16 plans of the aligned model, dense and 2:4 --------------------------------------------
if probe "from onnxprune.engine.backends import TENSORRT; raise SystemExit(bool(TENSORRT.missing()))"; then
    run_to /dev/null "$PY" -m onnxprune.cli sparsify "$OUT/aligned.onnx" -o "$OUT/aligned.24.onnx" --json
    onnxprune build "$OUT/aligned.onnx" -o "$OUT/dense.trt.plan" --backend tensorrt --fp16 \
        --no-sparse-weights "${profile[@]}"
    onnxprune build "$OUT/aligned.24.onnx" -o "$OUT/sparse.trt.plan" --backend tensorrt --fp16 \
        --sparse-weights "${profile[@]}"
    onnxprune build "$OUT/aligned.onnx" -o "$OUT/conv.trt.plan" --backend tensorrt --fp16 \
        --no-sparse-weights --bias-maps conv "${profile[@]}"
    for plan in dense sparse conv; do
        for batch in 1 32; do
            run "$PY" scripts/gpu_check.py time-plan "$OUT/$plan.trt.plan" "$OUT/$plan.trt.b$batch.time.json" \
                --shape "$(shape "$batch")"
        done
    done
else
    skip "$OUT/dense.trt.b1.time.json" "TensorRT is not installed (pip install 'onnxprune[trt]')"
fi

run "$PY" scripts/gpu_check.py table "$OUT"
