"""bench: median and p90 on ONNX Runtime, two models side by side, backends gated on real checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.measure.bench import BenchOptions, available_backends, bench

MNIST = Path(__file__).parents[2] / "models" / "mnist"
VGG, RESNET = MNIST / "mnist_vgg.l1.onnx", MNIST / "mnist_resnet.l1.onnx"
runner = CliRunner()


def test_two_models_side_by_side_with_the_ratio():
    result = runner.invoke(app, ["bench", str(VGG), str(RESNET), "--runs", "5", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    first, second = record["models"]
    assert first["ratio"] == 1.0 and second["ratio"] == pytest.approx(
        second["median_ms"] / first["median_ms"]
    )
    assert 0 < first["median_ms"] <= first["p90_ms"] and record["runs"] == 5
    table = runner.invoke(app, ["bench", str(VGG), "--runs", "3", "--threads", "1"])
    assert table.exit_code == 0 and "median ms" in table.output and "threads 1" in table.output


def test_batch_and_dims_come_from_shape():
    result = bench([VGG], BenchOptions(runs=2, warmup=0, shapes={"input": (4, 1, 28, 28)}))
    assert result[0].inputs == {"input": (4, 1, 28, 28)}


@pytest.mark.parametrize(
    ("args", "code"), [(["--runs", "0"], 2), (["--threads", "0"], 2), (["--backend", "metal"], 2)]
)
def test_bad_options_are_usage_errors(args, code):
    result = runner.invoke(app, ["bench", str(VGG), *args])
    assert result.exit_code == code and len(result.output.strip().splitlines()) == 1


@pytest.mark.skipif("cuda" in available_backends(), reason="this machine has a CUDA provider and device")
def test_a_gpu_backend_without_a_gpu_is_one_line_and_exit_1():
    for backend in ("cuda", "tensorrt", "trt"):
        result = runner.invoke(app, ["bench", str(VGG), "--backend", backend])
        assert result.exit_code == 1, result.output
        assert len(result.output.strip().splitlines()) == 1 and (
            "GPU" in result.output or "CUDA" in result.output
        )


def test_prune_bench_adds_latency_to_the_report(tmp_path):
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    args = ["prune", str(VGG), "-o", str(out), "--ratio", "0.5", "--bench", "--report", str(report)]
    result = runner.invoke(app, [*args, "--no-verify"])
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["bench"]["models"]
    assert [r["name"] for r in rows] == [VGG.name, out.name] and "latency" in result.output
    assert f"{rows[0]['median_ms']:.3g} ms → {rows[1]['median_ms']:.3g} ms" in result.output
    verbose = runner.invoke(app, [*args, "--no-verify", "-v"])
    assert verbose.exit_code == 0 and "median ms" in verbose.output, "the full table with -v"
