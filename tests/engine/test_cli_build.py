"""``onnxprune build`` and ``prune --plan`` with the real TensorRT-RTX (skipped, saying why, where its wheel
does not load): plans, their per-layer JSON and the report, on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from engine._models import classifier
from engine._rtx import needs_rtx
from onnxprune.cli import app
from onnxprune.devices import has_cuda_device

pytestmark = needs_rtx
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_build_writes_the_plan_and_its_layers_and_says_what_it_did(tmp_path: Path, sample: Path) -> None:
    plan = tmp_path / "m.plan"
    result = invoke("build", sample, "-o", plan, "--backend", "rtx")
    assert result.exit_code == 0, result.output
    assert plan.exists() and (tmp_path / "m.layers.json").exists()
    assert "TensorRT-RTX" in result.output and "bias maps" in result.output
    if not has_cuda_device():
        assert "not compared with ONNX Runtime" in result.output


def test_prune_plan_builds_both_and_reports_them(tmp_path: Path, sample: Path) -> None:
    out, plan, report = tmp_path / "p.onnx", tmp_path / "p.plan", tmp_path / "r.json"
    args = ("--ratio", "0.5", "--round-to", "4", "--plan", plan, "--report", report, "--backend", "rtx")
    result = invoke("prune", sample, "-o", out, *args)
    assert result.exit_code == 0, result.output
    assert out.exists() and plan.exists() and (tmp_path / "p.layers.json").exists()
    engine = json.loads(report.read_text())["engine"]
    assert engine["pruned"]["size_bytes"] == plan.stat().st_size
    assert (
        engine["original"]["size_bytes"] > 0 and engine["original"]["plan"] is None
    )  # measured, not written
    assert engine["params"]["after"] < engine["params"]["before"]
    assert engine["compared"] is (engine["pruned"]["not_compared"] is None)
    assert "original vs pruned" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p.layers.json",
        "p.onnx",
        "p.plan",
        "r.json",
        sample.name,
    ]


def test_a_failed_build_is_one_line_naming_the_node_and_writes_nothing(tmp_path: Path) -> None:
    model = tmp_path / "net.onnx"
    onnx.save(classifier(), str(model))
    result = invoke("build", model, "-o", tmp_path / "net.plan", "--compute-capability", "7.5")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "(node 'fc', Gemm)" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_prune_plan_that_fails_to_build_writes_nothing_and_names_no_file(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build runs on a staged copy: neither the model nor the report is written when it fails."""
    from onnxprune.cli import prune
    from onnxprune.errors import BuildError

    def refused(staged, plan, options, save_onnx=None):
        assert Path(staged).exists() and not plan.exists()
        raise BuildError("TensorRT-RTX 1.7 could not build the engine: no (node 'x', Conv); no plan written")

    monkeypatch.setattr(prune, "build_engine", refused)
    out, plan, report = tmp_path / "p.onnx", tmp_path / "p.plan", tmp_path / "r.json"
    args = ("--ratio", "0.5", "--round-to", "4", "--plan", plan, "--report", report)
    result = invoke("prune", sample, "-o", out, *args)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "the pruned model was not written either" in line
    assert str(out) not in line and "p.onnx" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample.name]


def test_prune_plan_with_a_bad_option_writes_nothing(tmp_path: Path, sample: Path) -> None:
    out, plan = tmp_path / "p.onnx", tmp_path / "p.plan"
    args = ("--ratio", "0.5", "--plan", plan, "--bias-maps", "bogus")
    assert invoke("prune", sample, "-o", out, *args).exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample.name]


def test_an_original_that_does_not_build_leaves_the_pruned_plan_and_says_so(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxprune.cli import prune
    from onnxprune.errors import BuildError

    def refused(*args, **kwargs):
        raise BuildError("TensorRT-RTX 1.7 could not build the engine: no; no plan written")

    monkeypatch.setattr(prune, "measure_engine", refused)
    out, plan, report = tmp_path / "p.onnx", tmp_path / "p.plan", tmp_path / "r.json"
    args = ("--ratio", "0.5", "--round-to", "4", "--plan", plan, "--report", report)
    result = invoke("prune", sample, "-o", out, *args)
    assert result.exit_code == 0, result.output
    assert out.exists() and plan.exists()
    assert "the original's plan could not be built to compare with" in result.stderr
    assert "original vs pruned" not in result.output
    assert json.loads(report.read_text())["engine"]["original"].startswith("the original's plan")


def test_the_plans_layer_record_may_not_be_another_output(tmp_path: Path, sample: Path) -> None:
    out, plan = tmp_path / "p.onnx", tmp_path / "p.plan"
    args = ("--ratio", "0.5", "--plan", plan, "--report", tmp_path / "p.layers.json")
    result = invoke("prune", sample, "-o", out, *args)
    assert result.exit_code == 2 and "the plan's layer record" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample.name]


def test_a_dynamic_input_without_a_build_shape_is_refused_before_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxprune import api

    model = tmp_path / "dynamic.onnx"
    dynamic = classifier(batch="N")
    dynamic.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"  # not only the batch: no default
    onnx.save(dynamic, str(model))

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("pruned although the plan cannot be built")

    monkeypatch.setattr(api, "prune", no_work)
    result = invoke(
        "prune", model, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--plan", tmp_path / "p.plan"
    )
    assert result.exit_code == 2 and "--shape x:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamic.onnx"]


def test_a_dynamic_batch_alone_is_built_for_batch_one_and_said(tmp_path: Path) -> None:
    model, plan = tmp_path / "batch.onnx", tmp_path / "p.plan"
    onnx.save(classifier(batch="N"), str(model))
    result = invoke("prune", model, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--plan", plan)
    assert result.exit_code == 0, result.output
    assert "a dynamic batch built for batch 1 (x:1x3x16x16)" in result.stderr and plan.exists()
