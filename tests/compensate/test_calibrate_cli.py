"""prune --calib through the CLI: bad calibration data is one line and exit 1 with nothing written; a
plain (not slimming-trained) MNIST model keeps its accuracy at ratio 0.5 with calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxprune.cli import app

MNIST = Path(__file__).parents[2] / "models" / "mnist"
VGG = MNIST / "mnist_vgg.plain.onnx"
CALIB = MNIST / "mnist5k_calib.npz"
runner = CliRunner()


def prune(tmp_path: Path, *args: object):
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["prune", str(VGG), "-o", str(out), "--ratio", "0.5", *map(str, args)])
    return result, out


def _npz(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, **arrays)
    return path


def _bad_source(tmp_path: Path, case: str) -> tuple[Path, str]:
    good = np.zeros((4, 1, 28, 28), np.float32)
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", "no .npy files and no images"
    if case == "unreadable image":
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG not really")
        return tmp_path / "images", "cannot read image broken.png"
    arrays, message = {
        "name": ({"image": good}, "not an input"),
        "shape": ({"input": np.zeros((4, 1, 32, 32), np.float32)}, "shape"),
        "dtype": ({"input": good.astype(np.complex64)}, "complex64"),
        "nan": ({"input": np.full_like(good, np.nan)}, "NaN"),
    }[case]
    return _npz(tmp_path, **arrays), message


@pytest.mark.parametrize("case", ["name", "shape", "dtype", "nan", "empty folder", "unreadable image"])
def test_bad_calibration_data_is_one_line_exit_1_nothing_written(tmp_path: Path, case: str) -> None:
    if case == "unreadable image":
        pytest.importorskip("PIL")
    source, message = _bad_source(tmp_path, case)
    result, out = prune(tmp_path, "--calib", source)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_usage_errors(tmp_path: Path) -> None:
    same, out = prune(tmp_path, "--calib", CALIB, "--inputs", CALIB)
    assert same.exit_code == 2 and "never calibrate on evaluation data" in same.output and not out.exists()
    activation, _ = prune(tmp_path, "--criterion", "activation")
    assert activation.exit_code == 2 and "--calib" in activation.output
    orphan, _ = prune(tmp_path, "--calib-size", "28x28")
    assert orphan.exit_code == 2
    steps, _ = prune(tmp_path, "--calib", CALIB, "--calib-steps", "refit,magic")
    assert steps.exit_code == 2 and "--calib-steps" in steps.output


def test_calibrated_prune_reports_layers_and_held_out_fidelity(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    steps = ["--calib-steps", "refit"]  # the refit alone, from the data-free folding
    result, out = prune(
        tmp_path, "--calib", CALIB, "--calib-samples", "96", "--no-verify", "--report", report, *steps
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and "held-out" in result.output
    calibration = json.loads(report.read_text())["calibration"]
    assert calibration["samples"] == {"fit": 86, "held_out": 10}
    refitted = [layer for layer in calibration["layers"] if layer["applied"] == "refit"]
    assert refitted and all(layer["rel_mse_after"] < layer["rel_mse_before"] for layer in refitted)
    fidelity = calibration["fidelity"]
    assert fidelity["after"]["logits"]["cosine"] > fidelity["before"]["logits"]["cosine"] + 0.3


def test_by_default_calibration_rebuilds_then_refits_and_never_ends_worse(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result, _ = prune(tmp_path, "--calib", CALIB, "--calib-samples", "96", "--no-verify", "--report", report)
    assert result.exit_code == 0, result.output
    saved = json.loads(report.read_text())
    assert saved["compensation"]["rebuilt"]["linear"] > 0
    fidelity = saved["calibration"]["fidelity"]
    assert fidelity["after"]["logits"]["damage"] <= fidelity["before"]["logits"]["damage"]


@pytest.mark.slow
def test_plain_mnist_model_at_half_keeps_accuracy_with_calibration(tmp_path: Path) -> None:
    """Without calibration this model falls to 10% at --ratio 0.5 (README); the aim is within 3 pp of
    98.5% with the 512 calibration images. Measured on the 1,000 test images, never calibrated on."""
    from onnxprune.runtime import run_model

    result, out = prune(tmp_path, "--calib", CALIB, "--no-verify")
    assert result.exit_code == 0, result.output
    with np.load(MNIST / "mnist5k_test.npz") as test:
        x, y = test["x"], test["y"]
    top1 = float((run_model(str(out), {"input": x})["logits"].argmax(1) == y).mean())
    assert top1 >= 0.95, top1


def test_inspect_warns_when_gamma_is_not_bimodal() -> None:
    plain = runner.invoke(app, ["inspect", str(VGG)])
    assert plain.exit_code == 0 and "not bimodal" in plain.output and "--calib" in plain.output
    slim = runner.invoke(app, ["inspect", str(MNIST / "mnist_vgg.l1.onnx")])
    assert slim.exit_code == 0 and "not bimodal" not in slim.output
