"""``onnxprune sensitivity`` and the allocation options of ``prune``, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from onnxprune.cli import app

MNIST = Path(__file__).parents[2] / "models" / "mnist"
PLAIN, CALIB = MNIST / "mnist_vgg.plain.onnx", MNIST / "mnist5k_calib.npz"
runner = CliRunner()
DATA = ["--calib", str(CALIB), "--calib-samples", "96", "--sensitivity-samples", "16"]


def test_sensitivity_prints_the_curves_and_writes_json_and_a_plot(tmp_path: Path) -> None:
    curves, picture = tmp_path / "curves.json", tmp_path / "curves.png"
    args = ["sensitivity", str(PLAIN), *DATA, "--json", str(curves), "--plot", str(picture)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sensitivity" in result.output and "50% kept" in result.output
    found = json.loads(curves.read_text())
    assert found["compensate"] == "calib" and found["on"].startswith("16 calibration samples")
    assert found["units"] and all(len(u["points"]) >= 2 for u in found["units"])
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_without_data_is_a_usage_error() -> None:
    result = runner.invoke(app, ["sensitivity", str(PLAIN)])
    assert result.exit_code == 2 and "pass --calib DATA or --eval-cmd" in result.output


def test_a_target_with_data_is_allocated_by_sensitivity_and_says_so(tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    args = ["prune", str(PLAIN), "-o", str(out), "--target-macs", "0.5", *DATA, "--report", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(report.read_text())
    assert saved["allocation"]["method"] == "sensitivity" and saved["target"]["within_tolerance"]
    assert "allocation: sensitivity" in result.output and "verdict: kept" in result.output
    assert saved["verdict"]["fidelity"] > 0.8


def test_allocate_layer_without_data_and_sensitivity_needs_a_target(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    args = ["prune", str(PLAIN), "-o", str(out), "--target-macs", "0.6", "--allocate", "layer", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["allocation"]["method"] == "layer"
    bad = runner.invoke(
        app, ["prune", str(PLAIN), "-o", str(out), "--ratio", "0.5", "--allocate", "sensitivity"]
    )
    assert bad.exit_code == 2 and "give a --target-*" in bad.output
