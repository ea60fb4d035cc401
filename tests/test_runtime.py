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

from onnxprune import runtime
from onnxprune.cli import app
from onnxprune.graph import normalise
from onnxprune.inputs import make_inputs
from onnxprune.measure.bench import BenchOptions, bench_record

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
