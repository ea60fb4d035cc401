"""The verdict: on the user's data a prune that lost the task is refused and writes nothing; on random
data it is a smoke test, labelled so, and never refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxprune import api
from onnxprune.cli import app
from onnxprune.errors import FidelityError

MNIST = Path(__file__).parents[2] / "models" / "mnist"
PLAIN, CALIB = MNIST / "mnist_vgg.plain.onnx", MNIST / "mnist5k_calib.npz"
runner = CliRunner()
# The plain net (no sparsity training) pruned hard with data-free compensation only: it loses the task.
COLLAPSE = ["--ratio", "0.9", "--compensate", "bn", "--calib", str(CALIB), "--calib-samples", "128"]


def test_a_collapsed_prune_is_refused_on_held_out_data_and_writes_nothing(tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    result = runner.invoke(app, ["prune", str(PLAIN), "-o", str(out), *COLLAPSE, "--report", str(report)])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the pruned model lost the original's behaviour: output ")
    assert "held-out calibration samples, below --min-fidelity 0.5; nothing written" in line
    assert "--min-fidelity 0" in line and "Traceback" not in result.output
    assert not out.exists() and not report.exists()


def test_min_fidelity_zero_writes_it_anyway_and_the_report_says_what_it_kept(tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    args = ["prune", str(PLAIN), "-o", str(out), *COLLAPSE, "--min-fidelity", "0", "--report", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    verdict = json.loads(report.read_text())["verdict"]
    assert verdict["users_data"] is True and verdict["on"] == "13 held-out calibration samples"
    assert verdict["fidelity"] < 0.5 and verdict["passed"] is True
    assert verdict["outputs"][verdict["worst_output"]]["kind"] == "classes"
    assert "verdict: kept" in result.output


def test_a_gentle_prune_passes_on_the_same_data() -> None:
    model = onnx.load(PLAIN)
    calib = api.CalibRequest(CALIB, limit=128)
    result = api.prune_model(model, api.PlanOptions(ratio=0.2), api.VerifyOptions(), calib)
    verdict = result.report["verdict"]
    assert verdict["passed"] is True and verdict["fidelity"] > 0.8


def test_random_data_gives_no_verdict_and_never_refuses(tmp_path: Path) -> None:
    model = onnx.load(PLAIN)
    result = api.prune_model(model, api.PlanOptions(ratio=0.9, compensate="bn"), api.VerifyOptions())
    assert "verdict" not in result.report and result.report["verify"]["exact"]["passed"]
    out = tmp_path / "out.onnx"
    printed = runner.invoke(app, ["prune", str(PLAIN), "-o", str(out), "--ratio", "0.5"])
    assert printed.exit_code == 0 and "verdict: none" in printed.output


def test_inputs_given_are_the_users_data(tmp_path: Path) -> None:
    model = onnx.load(PLAIN)
    x = np.load(CALIB)["input"][:16]
    data = tmp_path / "inputs.npz"
    np.savez(data, input=x)
    checks = api.VerifyOptions(inputs=data, min_fidelity=0.99)
    with pytest.raises(FidelityError, match="feed"):
        api.prune_model(model, api.PlanOptions(ratio=0.9, compensate="bn"), checks)
