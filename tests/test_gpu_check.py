"""scripts/gpu_check.sh, which needs a GPU to run for real: its dry run prints every step it would take and
writes nothing; its table reads the records the steps leave (timings, or why a part was skipped)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_the_dry_run_prints_every_step_and_writes_nothing(tmp_path):
    out = tmp_path / "check"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    text = "\n".join(steps)
    assert "scripts/gpu_check.py models" in steps[0]
    assert "--round-to 8" in text and "--round-to 1 --min-keep 1" in text  # aligned and misaligned widths
    for batch in (1, 32):
        assert f"--backend cuda --shape input:{batch}x3x224x224" in text
    assert (
        text.count("build") == 5
        and text.count("--backend rtx") == 2
        and text.count("--backend tensorrt") == 3
    )
    assert "--min-shape input:1x3x224x224" in text and "--max-shape input:32x3x224x224" in text
    assert "--no-sparse-weights" in text and "sparsify" in text and text.count("time-plan") == 10
    assert "--bias-maps conv" in text
    assert steps[-1].endswith(f"table {out}")
    assert "(check: " in done.stdout  # the capability checks it would make are printed too
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed here")
def test_the_scripts_are_shellcheck_clean():
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    done = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_table_shows_timings_ratios_and_skips(tmp_path):
    models = [{"name": n, "median_ms": ms} for n, ms in (("original.onnx", 2.0), ("aligned.onnx", 1.0))]
    (tmp_path / "ort_cuda_b1.json").write_text(json.dumps({"models": models}))
    (tmp_path / "ort_cuda_b32.json").write_text(json.dumps({"skipped": "no CUDA execution provider"}))
    (tmp_path / "aligned.rtx.b1.time.json").write_text(
        json.dumps({"plan": "a.rtx.plan", "batch": 1, "median_ms": 0.5})
    )
    (tmp_path / "dense.trt.b1.time.json").write_text(json.dumps({"skipped": "TensorRT is not installed"}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "table", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert any("aligned.onnx" in line and "1.000" in line and "0.500" in line for line in lines)
    assert any("ORT CUDA EP" in line and "skipped: no CUDA execution provider" in line for line in lines)
    assert any(line.startswith("TensorRT-RTX") and "0.500" in line for line in lines)
    assert any(line.startswith("TensorRT fp16") and "skipped" in line for line in lines)
