"""sweep: a ladder of targets from one analysis, each point counted, compared and (optionally) timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import onnxprune.analyse
import onnxprune.measure.sweep
from onnxprune.cli import app
from onnxprune.measure.sweep import SweepOptions, sweep

MNIST = Path(__file__).parents[2] / "models" / "mnist"
VGG, TEST = MNIST / "mnist_vgg.l1.onnx", MNIST / "mnist5k_test.npz"
runner = CliRunner()


@pytest.mark.slow
def test_one_analysis_serves_every_point(monkeypatch):
    calls = []
    real = onnxprune.measure.sweep.analyse  # the name sweep calls (imported at its module top)
    monkeypatch.setattr(onnxprune.measure.sweep, "analyse", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = sweep(onnx.load(VGG), SweepOptions(targets=[0.8, 0.5, 0.3], bench=None, iterations=2))
    assert len(calls) == 1
    original, *points = result["points"]
    assert original["macs"] > points[0]["macs"] > points[1]["macs"] > points[2]["macs"]
    for point, asked in zip(points, (0.8, 0.5, 0.3), strict=True):
        assert abs(point["reached"] / asked - 1) <= 0.02
        assert point["reached"] == pytest.approx(point["macs"] / original["macs"])
        assert 0.9 < point["cosine"] <= 1.0 and point["top1_agreement"] is not None
    # Less kept, further from the original: the trade-off the sweep is for.
    assert points[0]["cosine"] >= points[2]["cosine"]


@pytest.mark.slow
def test_cli_table_json_accuracy_and_an_unreachable_point():
    args = ["sweep", str(VGG), "--targets", "0.5,0.001", "--labels", str(TEST), "--no-bench", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    original, half, tiny = json.loads(result.stdout)["points"]
    assert 0.95 < original["accuracy"] <= 1.0 and 0.5 < half["accuracy"] <= 1.0
    assert "cannot reach macs 0.001" in tiny["error"]
    table = runner.invoke(app, ["sweep", str(VGG), "--targets", "0.6", "--runs", "3"])
    assert table.exit_code == 0, table.output
    assert "original" in table.output and "0.6" in table.output and "latency" in table.output


@pytest.mark.parametrize(
    "args", [["--targets", "0.5,1.5"], ["--targets", "a,b"], ["--kind", "latency"], ["--targets", ""]]
)
def test_bad_ladders_are_usage_errors(args):
    result = runner.invoke(app, ["sweep", str(VGG), *args])
    assert result.exit_code == 2, result.output


def test_labels_that_do_not_fit_are_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 1, 28, 28), np.float32), y=np.zeros(2))
    result = runner.invoke(app, ["sweep", str(VGG), "--labels", str(bad), "--no-bench", "--targets", "0.5"])
    assert result.exit_code == 1 and "3 samples in x but 2 labels" in result.output
