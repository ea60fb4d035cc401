# shellcheck shell=bash
# Sourced by scripts/gpu_smoke.sh and scripts/gpu_sparse.sh (not run on its own): moves to the repository
# root and finds what both need, each missing piece a one-line exit 1. Sets PY (PYTHON, else .venv/bin/python,
# else python3) and TRTEXEC (TRTEXEC, else trtexec on PATH); defines die and run_onnxprune.

die() {
    echo "$(basename "$0" .sh): $*" >&2
    exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=$(command -v python3) || die "no Python found; set PYTHON"
"$PY" -c "import onnxprune" 2>/dev/null || die "onnxprune is not importable by $PY (make setup, or set PYTHON)"
TRTEXEC=${TRTEXEC:-$(command -v trtexec || true)}
[[ -n $TRTEXEC && -x $TRTEXEC ]] || die "trtexec not found: put TensorRT's bin/ on PATH or set TRTEXEC"
"$PY" -c "from onnxprune.devices import has_cuda_device as h; raise SystemExit(not h())" ||
    die "no CUDA device visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"

run_onnxprune() { "$PY" -c "from onnxprune.cli import main; main()" "$@"; }
