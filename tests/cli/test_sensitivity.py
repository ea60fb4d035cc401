"""``onnxprune sensitivity`` and the allocation options of ``prune``, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.report import sensitivity_table

MNIST = Path(__file__).parents[2] / "models" / "mnist"
PLAIN, CALIB = MNIST / "mnist_vgg.plain.onnx", MNIST / "mnist5k_calib.npz"
runner = CliRunner()
DATA = ["--calib", str(CALIB), "--calib-samples", "96", "--sensitivity-samples", "16"]


def test_sensitivity_prints_the_curves_and_writes_json_and_a_plot(tmp_path: Path) -> None:
    curves, picture = tmp_path / "curves.json", tmp_path / "curves.png"
    args = ["sensitivity", str(PLAIN), *DATA, "--json", str(curves), "--plot", str(picture)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sensitivity" in result.output and "cut 1" in result.output and " -> " in result.output
    found = json.loads(curves.read_text())
    assert found["compensate"] == "calib" and found["on"].startswith("16 calibration samples")
    assert found["units"] and all(len(u["points"]) >= 2 for u in found["units"])
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_groups_of_odd_sizes_share_one_column_per_cut() -> None:
    """Sizes 22, 26 and 50 round three fractions to nine different ones; the table has three cut columns."""
    units = [
        {"label": f"g{size}", "channels": size, "points": [{"kept": size, "damage": 0.0, "fidelity": 1.0}]
         + [{"kept": k, "damage": 1.0 / k, "fidelity": 0.9} for k in kept]}
        for size, kept in ((22, (17, 11, 6)), (26, (20, 13, 7)), (50, (38, 25, 13)))
    ]  # fmt: skip
    table = sensitivity_table(
        {"units": units, "on": "x", "compensate": "calib", "evaluations": 9, "seconds": 1}
    )
    assert [c.header for c in table.columns] == ["group", "channels", "cut 1", "cut 2", "cut 3"]
    assert list(table.columns[2].cells) == ["17 -> 0.0588 (0.90)", "20 -> 0.05 (0.90)", "38 -> 0.0263 (0.90)"]


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
