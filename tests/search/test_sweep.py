"""sweep: a ladder of targets from one analysis, each point counted, compared and (optionally) timed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import onnxprune.analyse
import onnxprune.search.sweep
from onnxprune.cli import app
from onnxprune.search.sweep import SweepOptions, sweep

MNIST = Path(__file__).parents[2] / "models" / "mnist"
VGG, TEST = MNIST / "mnist_vgg.l1.onnx", MNIST / "mnist5k_test.npz"
runner = CliRunner()


@pytest.mark.slow
def test_one_analysis_serves_every_point(monkeypatch):
    calls = []
    real = onnxprune.search.sweep.prepare  # the name sweep calls (imported at its module top)
    monkeypatch.setattr(onnxprune.search.sweep, "prepare", lambda *a, **k: calls.append(1) or real(*a, **k))
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
    assert "cannot reach macs 0.001" in tiny["error"] and "nothing written" not in tiny["error"]
    table = runner.invoke(app, ["sweep", str(VGG), "--targets", "0.6", "--runs", "3"])
    assert table.exit_code == 0, table.output
    assert "original" in table.output and "0.6" in table.output and "latency" in table.output


@pytest.mark.parametrize(
    "args", [["--targets", "0.5,1.5"], ["--targets", "a,b"], ["--kind", "latency"], ["--targets", ""]]
)
def test_bad_ladders_are_usage_errors(args):
    result = runner.invoke(app, ["sweep", str(VGG), *args])
    assert result.exit_code == 2, result.output
    assert "--target-" not in result.output, "sweep has no --target-* option to blame"


def test_labels_that_do_not_fit_are_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 1, 28, 28), np.float32), y=np.zeros(2))
    result = runner.invoke(app, ["sweep", str(VGG), "--labels", str(bad), "--no-bench", "--targets", "0.5"])
    assert result.exit_code == 1 and "3 samples in x but 2 labels" in result.output


PLAIN, CALIB = MNIST / "mnist_vgg.plain.onnx", MNIST / "mnist5k_calib.npz"


@pytest.mark.slow
def test_one_row_per_mode_each_allocated_by_sensitivity_with_data(monkeypatch):
    """none and bn are analysed once each (calib prunes with the bn analysis); with calibration data every
    mode allocates by measured sensitivity, and on the plain net calibration wins back the accuracy that
    removal without retraining loses."""
    from onnxprune import api

    analyses = []
    real_prepare = onnxprune.search.sweep.prepare
    monkeypatch.setattr(
        onnxprune.search.sweep,
        "prepare",
        lambda *a, **k: analyses.append(a[1].analysis_mode) or real_prepare(*a, **k),
    )
    calib = api.CalibRequest(CALIB, limit=128)
    options = SweepOptions(
        targets=[0.5], bench=None, iterations=2, labels=TEST, compensate=["none", "bn", "calib"], calib=calib
    )
    result = sweep(onnx.load(PLAIN), options)
    assert result["compensate"] == ["none", "bn", "calib"]
    assert analyses == ["none", "bn"]
    original, none, bn, calibrated = result["points"]
    assert [p["compensate"] for p in (original, none, bn, calibrated)] == [None, "none", "bn", "calib"]
    assert {p["allocation"] for p in (none, bn, calibrated)} == {"sensitivity"}
    assert all(abs(p["reached"] / 0.5 - 1) <= 0.02 for p in (none, bn, calibrated))
    assert calibrated["accuracy"] > 0.9 and calibrated["accuracy"] >= bn["accuracy"] - 0.01
    assert calibrated["fidelity"] > 0.8, "the held-out verdict of the calibrated point"


def test_cli_modes_default_to_bn_and_add_calib_with_calib_data():
    args = ["sweep", str(VGG), "--targets", "0.6", "--no-bench", "--iterations", "1", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["compensate"] == ["bn"] and [p["compensate"] for p in payload["points"]] == [None, "bn"]
    args[1] = str(PLAIN)  # the slimmed net's bn point is exact already: little for calibration to do
    calibrated = runner.invoke(app, [*args, "--calib", str(CALIB), "--calib-samples", "64"])
    assert calibrated.exit_code == 0, calibrated.output
    points = json.loads(calibrated.stdout)["points"]
    assert [p["compensate"] for p in points] == [None, "bn", "calib"]
    assert points[2]["cosine"] != points[1]["cosine"]  # refitted, not the bn model again


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--calib", str(TEST), "--labels", str(TEST)], "never calibrate on evaluation data"),
        (["--compensate", "bn,calib"], "--compensate calib and --calib go together"),
        (["--compensate", "none", "--calib", str(CALIB)], "--compensate calib and --calib go together"),
        (["--compensate", "bn,bn"], "distinct modes"),
        (["--compensate", "zero"], "--compensate must be one of auto, none, bn, calib"),
        (["--calib-samples", "10"], "need --calib"),
    ],
)
def test_bad_modes_and_calibration_on_the_labels_are_usage_errors(extra, message):
    result = runner.invoke(app, ["sweep", str(VGG), "--targets", "0.5", "--no-bench", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("mode", ["bn", "calib"])
def test_a_sweep_point_is_the_model_prune_writes_at_that_target(monkeypatch, mode):
    """Sweep and prune run the one pipeline: at the same target and mode, the very same model."""
    from onnxprune import api

    made: list[api.PruneResult] = []
    real = onnxprune.search.sweep.execute
    monkeypatch.setattr(
        onnxprune.search.sweep, "execute", lambda *a, **k: made.append(r := real(*a, **k)) or r
    )
    calib = api.CalibRequest(CALIB, limit=64) if mode == "calib" else None
    options = SweepOptions(targets=[0.6], bench=None, iterations=1, compensate=[mode], calib=calib)
    sweep(onnx.load(PLAIN), options)
    pruned = api.prune_model(
        onnx.load(PLAIN), api.PlanOptions(ratio=0.0, compensate=mode), api.VerifyOptions(enabled=False),
        calib, target=api.Target("macs", 0.6),
    )  # fmt: skip
    (point,) = made
    assert point.pruned.SerializeToString() == pruned.pruned.SerializeToString()
