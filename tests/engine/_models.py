"""The small model the engine tests build: a padded Conv, an activation and a Gemm head, every node named."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def classifier(batch: int | str = 1, op: str = "Relu", domain: str = "") -> onnx.ModelProto:
    """x[batch,3,16,16] -> conv (pad 1) -> act (OP) -> pool -> flatten -> fc (Gemm) -> y[batch,10]."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.27, (8, 3, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv.b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (10, 8)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node(op, ["c"], ["r"], name="act", domain=domain),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], weights,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model
