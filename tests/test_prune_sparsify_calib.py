"""prune --sparsify with calibration data: SparseGPT on the pruned model's own activations, on the same
samples as prune's (loaded once), never fitted on what calibration held out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import tiny
from typer.testing import CliRunner

from onnxprune import api
from onnxprune.cli import app
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.sparsity import SparsifyOptions, holds_24, sparsify_model
from onnxprune.sparsity.weights import resolve

SPARSE = SparsifyOptions(min_channels=8)


def _samples(count: int = 24) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(3).normal(size=(count, 3, 16, 16)).astype(np.float32)}


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    graph = gs.import_onnx(model)
    return {n.name: resolve(n).values() for n in graph.nodes if n.op in ("Conv", "Gemm")}


def _prune(sparsify: SparsifyOptions | None, verify: bool = True) -> api.PruneResult:
    checks = api.VerifyOptions(enabled=verify, iterations=1)
    return api.prune_model(tiny.chain(), api.PlanOptions(ratio=0.3), checks,
                           api.CalibRequest(samples=_samples()), sparsify=sparsify)  # fmt: skip


@pytest.fixture(scope="module")
def pruned() -> dict[str, api.PruneResult]:
    return {"sparse": _prune(SPARSE), "dense": _prune(None)}


def test_prune_sparsify_is_calibrated_on_the_pruned_models_activations(pruned: dict) -> None:
    result, alone = pruned["sparse"], pruned["dense"]
    report = result.report["sparsity"]
    assert report["method"] == "sparsegpt" and report["sparsified"] >= 1
    assert report["fidelity"]["data"] == "held-out calibration samples (6)"  # 0.25 of 24
    # The same as sparsifying the pruned model alone on the same samples: the same data, the pruned
    # model's own activations (not the original's).
    again = sparsify_model(alone.pruned, SparsifyOptions(min_channels=8, calib=_samples()))
    got, want = _weights(result.pruned), _weights(again.model)
    assert got.keys() == want.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    magnitude = sparsify_model(alone.pruned, SPARSE)
    assert any(not np.array_equal(got[n], w) for n, w in _weights(magnitude.model).items())


def test_the_change_from_the_original_is_measured_after_the_24_step(pruned: dict) -> None:
    verify = pruned["sparse"].report["verify"]
    before, after = verify["change_before_sparsity"]["outputs"][0], verify["change"]["outputs"][0]
    assert after["max_abs_err"] != before["max_abs_err"]
    assert "change_before_sparsity" not in pruned["dense"].report["verify"]


def test_sparsify_never_fits_on_what_calibration_held_out() -> None:
    """With --compensate calib holding out half, the 2:4 step holds out (at least) the same half."""
    result = api.prune_model(
        tiny.chain(),
        api.PlanOptions(ratio=0.3, compensate="calib"),
        api.VerifyOptions(enabled=False),
        api.CalibRequest(samples=_samples(), options=CalibOptions(holdout=0.5)),
        sparsify=SPARSE,
    )
    assert "calibration" in result.report
    assert result.report["sparsity"]["fidelity"]["data"] == "held-out calibration samples (12)"


@pytest.mark.slow
def test_its_own_selection_and_data_are_kept() -> None:
    report = _prune(SparsifyOptions(min_channels=8, selection="magnitude"), False).report["sparsity"]
    assert report["method"] == "magnitude" and report["fidelity"]["data"].startswith("held-out")
    own = SparsifyOptions(min_channels=8, calib=_samples(8))
    assert _prune(own, False).report["sparsity"]["fidelity"]["data"] == "held-out calibration samples (2)"


@pytest.mark.slow
def test_cli_prune_sparsify_calib(tmp_path: Path) -> None:
    source, out, calib = tmp_path / "chain.onnx", tmp_path / "pruned.onnx", tmp_path / "calib.npz"
    onnx.save(tiny.chain(), source)
    np.savez(calib, **_samples())
    args = ["prune", str(source), "-o", str(out), "--ratio", "0.3", "--sparsify", "--min-channels", "8",
            "--calib", str(calib), "--compensate", "bn", "--iterations", "1"]  # fmt: skip
    table = CliRunner().invoke(app, [*args, "--report", str(tmp_path / "report.json")])
    assert table.exit_code == 0, table.output
    assert "SparseGPT, calibrated" in table.output and "what pruning and 2:4 did" in table.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sparsity"]["method"] == "sparsegpt" and report["sparsity"]["sparsified"] >= 1
    assert holds_24(onnx.load(out))
