"""ONNX Runtime's own log lines never reach the user's terminal, whichever path makes the session.

ONNX Runtime writes them to file descriptor 2 from C++, past Python's ``sys.stderr``: only ``capfd`` sees
them. Its process-wide logger keeps the lowest severity any earlier test set, so each test first puts it
back at ONNX Runtime's default (warnings), as in a fresh process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from onnx import numpy_helper
from typer.testing import CliRunner

from onnxprune import api, runtime
from onnxprune.cli import app
from onnxprune.errors import ValidationError
from onnxprune.graph import normalise
from onnxprune.inputs import make_inputs, prepare_feeds
from onnxprune.measure.bench import BenchOptions, bench_record
from onnxprune.options import PlanOptions
from onnxprune.runtime import check_runs

ort = pytest.importorskip("onnxruntime")
WARNING = 2  # ONNX Runtime's default severity


def _with_unused_initializer() -> onnx.ModelProto:
    """ONNX Runtime warns "Removing initializer 'unused'" for every session of this model."""
    model = tiny.residual()
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    return model


@pytest.fixture()
def noisy(tmp_path: Path) -> Path:
    path = tmp_path / "noisy.onnx"
    onnx.save(_with_unused_initializer(), path)
    return path


@pytest.fixture(autouse=True)
def _fresh_logger() -> None:
    ort.set_default_logger_severity(WARNING)


def test_the_model_makes_onnxruntime_warn(noisy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ort.InferenceSession(str(noisy), providers=["CPUExecutionProvider"])
    assert "Removing initializer 'unused'" in capfd.readouterr().err


def test_sessions_of_onnxprune_are_silent(noisy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    runtime.ort_session(noisy)
    runtime.run_model(onnx.load(noisy), make_inputs(onnx.load(noisy))[0])
    assert capfd.readouterr().err == ""


def test_bench_is_silent(noisy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bench_record([noisy], BenchOptions(runs=1, warmup=0, min_seconds=0.0))
    assert capfd.readouterr().err == ""


def _with_constant_subgraph() -> onnx.ModelProto:
    """``y = x + a * b`` with ``a`` and ``b`` constants: loading folds ``a * b``."""
    return onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y)
        <float[4] a = {1.0, 2.0, 3.0, 4.0}, float[4] b = {2.0, 2.0, 2.0, 2.0}> {
            ab = Mul(a, b)
            y = Add(x, ab)
        }"""
    )


def test_a_session_that_onnxprune_did_not_configure_is_silent_once_loaded(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """graphsurgeon's constant folding makes sessions with ONNX Runtime's default options."""
    graph = normalise(_with_constant_subgraph())
    assert [node.op for node in graph.nodes] == ["Add"], "the product was folded by an ONNX Runtime session"
    ort.InferenceSession(_with_unused_initializer().SerializeToString(), providers=["CPUExecutionProvider"])
    assert capfd.readouterr().err == ""


def test_prune_and_bench_commands_print_no_onnxruntime_line(
    noisy: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    out = tmp_path / "pruned.onnx"
    pruned = runner.invoke(app, ["prune", str(noisy), "-o", str(out), "--ratio", "0.5", "--bench"])
    assert pruned.exit_code == 0, pruned.output
    ort.set_default_logger_severity(WARNING)
    timed = runner.invoke(app, ["bench", str(noisy), "--runs", "1", "--min-seconds", "0", "--warmup", "0"])
    assert timed.exit_code == 0, timed.output
    assert "onnxruntime" not in capfd.readouterr().err


def _with_minus_one_batch() -> onnx.ModelProto:
    """What older exporters (PaddlePaddle's) write for a dynamic batch: ``dim_value: -1``."""
    model = tiny.residual()
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = -1
    return model


def test_minus_one_is_not_a_static_output_size() -> None:
    assert runtime._static_output_shapes(_with_minus_one_batch()) is None
    assert runtime._static_output_shapes(tiny.residual()) == {"/gemm30/Gemm_out0": (1, 10)}


def test_a_model_with_minus_one_dims_prunes_and_keeps_a_dynamic_batch(tmp_path: Path) -> None:
    source, out = tmp_path / "paddle.onnx", tmp_path / "pruned.onnx"
    onnx.save(_with_minus_one_batch(), source)
    result = CliRunner().invoke(app, ["prune", str(source), "-o", str(out), "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    pruned = onnx.load(out)
    batch = pruned.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value"), "the input's batch stays dynamic"
    assert np.isfinite(runtime.run_model(pruned, make_inputs(pruned)[0])["/gemm30/Gemm_out0"]).all()


# PaddlePaddle exports write a dynamic dimension as dim_value -1.
SHAPES = {"input": (1, 3, 16, 16)}


def _batch_declared_as_minus_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Input and output batch written as dim_value -1, as paddle2onnx writes a dynamic dimension (the
    PaddleOCR v2.0 text-direction classifier: input [-1, 3, ?, ?], output [-1, 2])."""
    del model.graph.value_info[:]
    for value in (model.graph.input[0], model.graph.output[0]):
        shape = value.type.tensor_type.shape
        if not shape.dim:
            shape.dim.add()
            shape.dim.add().dim_value = 10
        shape.dim[0].Clear()
        shape.dim[0].dim_value = -1
    return model


def test_a_negative_declared_dimension_is_dynamic_not_a_shape_to_match() -> None:
    model = _batch_declared_as_minus_one(tiny.chain(dead=0.0))
    checks = api.VerifyOptions(enabled=False, shapes=SHAPES)
    result = api.prune_model(model, PlanOptions(ratio=0.5), checks)
    check_runs(model, result.pruned, feeds=prepare_feeds(model, shapes=SHAPES))
    assert result.report["macs"]["after"] < result.report["macs"]["before"]


def test_a_changed_output_shape_is_still_caught() -> None:
    model, other = tiny.chain(dead=0.0), tiny.chain(dead=0.0)
    head = next(n for n in other.graph.node if n.op_type == "Gemm")
    for name, size in ((head.input[1], 5 * 16), (head.input[2], 5)):
        tensor = next(t for t in other.graph.initializer if t.name == name)
        tensor.dims[0] = 5
        tensor.raw_data = tensor.raw_data[: size * 4]
    del other.graph.value_info[:], other.graph.output[0].type.tensor_type.shape.dim[:]
    with pytest.raises(ValidationError, match="changes output"):
        check_runs(model, other)
