"""The report's per-layer error of data-free compensation (compensate/layer_error.py via api.prune_model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from tiny import with_dead_beta

from onnxprune import api
from onnxprune.options import PlanOptions
from onnxprune.report import compensation_table

MNIST = Path(__file__).parents[2] / "models" / "mnist"
DEAD = PlanOptions(threshold=0.0, round_to=1, min_keep=1)  # exactly the gamma = 0 channels


def _carrying(result: api.PruneResult) -> list[dict]:
    return [layer for layer in result.report["compensation"]["layers"] if layer["carrying"]]


def test_exact_constants_leave_no_error_and_removing_them_does() -> None:
    """gamma = 0, beta != 0 channels: folded, the consumer's output is the original's; dropped, it is not."""
    model = with_dead_beta(tiny.chain())
    result = api.prune_model(model, DEAD, api.VerifyOptions())
    layers = _carrying(result)
    assert layers, "the test model must remove channels that carry a constant"
    section = result.report["compensation"]
    assert "verification inputs" in section["error_on"]
    # One random feed of batch 1: the Gemm sees one row, whose variance is not defined ("-").
    assert [la["node"] for la in layers if la["rel_mse_after"] is None] == ["/gemm32/Gemm"]
    measured = [la for la in layers if la["rel_mse_after"] is not None]
    assert measured
    for layer in measured:
        assert layer["exact"] is True
        assert layer["rel_mse_after"] < 1e-9, layer
        assert layer["rel_mse_before"] > 1e-4, layer


def test_no_verify_skips_the_measurement_and_says_so() -> None:
    model = with_dead_beta(tiny.chain())
    result = api.prune_model(model, DEAD, api.VerifyOptions(enabled=False))
    section = result.report["compensation"]
    assert "--no-verify" in section["error_skipped"]
    assert all("rel_mse_after" not in layer for layer in section["layers"])
    assert "not measured" in str(compensation_table(section).caption)


def test_calibration_samples_measure_it_when_given() -> None:
    model = with_dead_beta(tiny.chain())
    x = np.random.default_rng(3).standard_normal((20, 3, 16, 16)).astype(np.float32)
    calib = api.CalibRequest(samples={"input": x})
    result = api.prune_model(model, DEAD, api.VerifyOptions(), calib)
    section = result.report["compensation"]
    assert section["error_on"] == "2 held-out calibration samples"
    # Two samples: the Gemm has two rows now.
    assert all(layer["rel_mse_after"] < 1e-9 for layer in _carrying(result))


@pytest.mark.slow
def test_trained_model_compensation_lowers_most_layer_errors(tmp_path: Path) -> None:
    """mnist_vgg.l1 at ratio 0.7 (its removed channels have small, not zero, gamma), fed 64 test images."""
    model = onnx.load(str(MNIST / "mnist_vgg.l1.onnx"))
    with np.load(MNIST / "mnist5k_test.npz") as data:
        np.savez(tmp_path / "eval.npz", input=data["x"][:64].astype(np.float32))
    verify = api.VerifyOptions(inputs=tmp_path / "eval.npz")
    result = api.prune_model(model, PlanOptions(ratio=0.7), verify)
    layers = [la for la in _carrying(result) if la["rel_mse_before"] is not None]
    assert len(layers) >= 3
    better = [la for la in layers if la["rel_mse_after"] < la["rel_mse_before"]]
    assert len(better) > len(layers) / 2, layers
    table = compensation_table(result.report["compensation"])
    assert [c.header for c in table.columns][-2:] == ["rel. MSE\nnone", "rel. MSE\nwith"]


def test_models_over_2_gb_skip_the_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune import files

    model = with_dead_beta(tiny.chain())
    monkeypatch.setattr(files, "needs_external_data", lambda m: True)
    result = api.prune_model(model, DEAD, api.VerifyOptions())
    assert "over 2 GB" in result.report["compensation"]["error_skipped"]


def test_a_long_compensation_table_shows_the_worst_layers_in_network_order() -> None:
    layers = [
        {"node": f"conv{i}", "removed": 1, "carrying": 1, "applied": "bias", "exact": True,
         "estimate": [0.0], "rel_mse_before": 1.0, "rel_mse_after": err}
        for i, err in enumerate([0.1, 0.9, 0.0, 0.5, 0.7, 0.2])
    ]  # fmt: skip
    section = {"mode": "bn", "layers": layers, "approximations": [], "error_on": "test inputs"}
    table = compensation_table(section, limit=3)
    shown = list(table.columns[0].cells)
    assert shown == ["conv1", "conv3", "conv4", "…"], shown
    assert "3 more" in list(table.columns[1].cells)[-1]
    assert list(compensation_table(section, limit=6).columns[0].cells) == [f"conv{i}" for i in range(6)]
