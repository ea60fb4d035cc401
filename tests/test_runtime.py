"""runtime.check_runs: the pruned model runs and keeps the original's output shapes."""

from __future__ import annotations

import onnx
import pytest
import tiny

from onnxprune import api
from onnxprune.errors import ValidationError
from onnxprune.inputs import prepare_feeds
from onnxprune.plan import PlanOptions
from onnxprune.runtime import check_runs

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
