"""onnxprune sparsify, inspect --sparsity, prune --sparsify, build's sparse weights: through CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import sparse_models
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.sparsity import holds_24

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sparse") / "routes.onnx"
    onnx.save(sparse_models.routes(), path)
    return path


def test_inspect_sparsity_lists_each_layer(model: Path) -> None:
    result = runner.invoke(app, ["inspect", str(model), "--sparsity", "--min-channels", "16", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["node"]: row for row in json.loads(result.stdout)["sparsity"]}
    assert rows["/a/Conv"]["eligible"] and not rows["/a/Conv"]["already_24"]
    assert rows["/dw/Conv"]["reason"].startswith("depthwise")
    assert 0 < rows["/a/Conv"]["macs_share"] < 1
    table = runner.invoke(app, ["inspect", str(model), "--sparsity"])
    assert table.exit_code == 0 and "0 of 7 layers eligible" in table.output


def test_sparsify_writes_report_and_model(model: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    args = ["sparsify", str(model), "-o", str(out), "--min-channels", "16", "--exclude", "/qdq/*",
            "--report", str(report)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 of 7 layers 2:4 (magnitude)" in result.output
    saved = json.loads(report.read_text())
    assert {row["node"] for row in saved["layers"] if row["sparsified"]} == set(sparse_models.ELIGIBLE) - {
        "/qdq/Gemm"
    }
    assert holds_24(onnx.load(out))
    again = runner.invoke(app, ["inspect", str(out), "--sparsity", "--min-channels", "16", "--json"])
    rows = {row["node"]: row for row in json.loads(again.output)["sparsity"]}
    assert rows["/a/Conv"]["already_24"] and not rows["/qdq/Gemm"]["already_24"]


def test_sparsify_calibrated(model: Path, tmp_path: Path) -> None:
    calib, out = tmp_path / "calib.npz", tmp_path / "out.onnx"
    np.savez(calib, **sparse_models.correlated_samples(64))
    result = runner.invoke(app, ["sparsify", str(model), "-o", str(out), "--min-channels", "16",
                                 "--calib", str(calib), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == "sparsegpt"
    assert report["fidelity"]["data"] == "held-out calibration samples (16)"
    assert all("output_error" in row for row in report["layers"] if row["sparsified"])
    assert report["grams"].startswith("sequential")
    one = runner.invoke(app, ["sparsify", str(model), "-o", str(out), "--min-channels", "16",
                              "--calib", str(calib), "--one-pass", "--json"])  # fmt: skip
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["grams"].startswith("one pass")


def test_sparsify_bad_input_is_one_line(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    nothing = runner.invoke(app, ["sparsify", str(model), "-o", str(out)])
    assert nothing.exit_code == 1 and "is eligible for 2:4" in nothing.output
    assert "Traceback" not in nothing.output and not out.exists()
    calib = tmp_path / "bad.npz"
    np.savez(calib, other=np.zeros((4, 16, 8, 8), np.float32))
    bad = runner.invoke(
        app, ["sparsify", str(model), "-o", str(out), "--min-channels", "16", "--calib", str(calib)]
    )
    assert bad.exit_code == 1 and "error:" in bad.output and "Traceback" not in bad.output
    usage = runner.invoke(app, ["sparsify", str(model), "-o", str(out), "--min-channels", "0"])
    assert usage.exit_code == 2 and "--min-channels must be at least 1" in usage.output
    same = runner.invoke(app, ["sparsify", str(model), "-o", str(model), "--min-channels", "16"])
    assert same.exit_code == 2 and "overwrite the input" in same.output


def test_prune_sparsify(tmp_path: Path) -> None:
    import tiny

    source, out = tmp_path / "chain.onnx", tmp_path / "pruned.onnx"
    onnx.save(tiny.chain(), source)
    args = [
        "prune",
        str(source),
        "-o",
        str(out),
        "--ratio",
        "0.3",
        "--sparsify",
        "--min-channels",
        "8",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sparsity"]["sparsified"] >= 1
    assert holds_24(onnx.load(out))
    alone = runner.invoke(
        app, ["prune", str(source), "-o", str(out), "--ratio", "0.3", "--min-channels", "8"]
    )
    assert alone.exit_code == 2 and "--min-channels only applies with --sparsify" in alone.output


def test_build_turns_sparse_weights_on_for_a_24_model(model: Path, tmp_path: Path) -> None:
    """Without TensorRT or a GPU, build --backend tensorrt says so in one line and prints the trtexec
    command to run."""
    from onnxprune.devices import has_cuda_device, has_module

    if has_module("tensorrt") and has_cuda_device():
        pytest.skip("TensorRT and a GPU are here: the printed-command path is not taken")
    sparse = tmp_path / "sparse.onnx"
    assert (
        runner.invoke(app, ["sparsify", str(model), "-o", str(sparse), "--min-channels", "16"]).exit_code == 0
    )
    trt = ["--backend", "tensorrt"]
    built = runner.invoke(app, ["build", str(sparse), "-o", str(tmp_path / "s.plan"), *trt])
    assert built.exit_code == 1 and "--sparsity=enable" in built.output
    dense = runner.invoke(app, ["build", str(model), "-o", str(tmp_path / "d.plan"), *trt])
    assert dense.exit_code == 1 and "trtexec" in dense.output and "--sparsity=enable" not in dense.output
    off = runner.invoke(
        app, ["build", str(sparse), "-o", str(tmp_path / "s.plan"), "--no-sparse-weights", *trt]
    )
    assert "--sparsity=enable" not in off.output


def test_sparsify_counts_and_feeds_at_the_shape_given(model: Path, tmp_path: Path) -> None:
    reports = {}
    for batch in (1, 4):
        out, report = tmp_path / f"b{batch}.onnx", tmp_path / f"b{batch}.json"
        args = ["sparsify", str(model), "-o", str(out), "--min-channels", "16", "--report", str(report)]
        result = runner.invoke(app, [*args, "--shape", f"input:{batch}x16x8x8"])
        assert result.exit_code == 0, result.output
        reports[batch] = json.loads(report.read_text())
    conv = {b: next(row for row in r["layers"] if row["node"] == "/a/Conv") for b, r in reports.items()}
    assert conv[4]["macs"] == 4 * conv[1]["macs"] > 0
    assert reports[4]["options"]["shapes"] == {"input": [4, 16, 8, 8]}
    bad = runner.invoke(app, ["sparsify", str(model), "-o", str(tmp_path / "x.onnx"), "--shape", "input:1x3"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
