"""The padded Conv's bias map stored as separable factors: the same numbers, far fewer stored."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measure.counter import count
from onnxprune.rules.padmap import bias_map_factors, bias_map_size, padded_bias_map
from onnxprune.runtime import run_model


def _factored_model(kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """x + rows @ taps @ cols, the graph insert_bias_map writes, as a standalone model."""
    k, (ho, wo) = kernel.shape[0], (rows.shape[0], cols.shape[1])
    nodes = [
        helper.make_node("MatMul", ["rows", "taps"], ["half"]),
        helper.make_node("MatMul", ["half", "cols"], ["map"]),
        helper.make_node("Add", ["x", "map"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for n, a in (("rows", rows), ("taps", kernel), ("cols", cols))
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k, ho, wo])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k, ho, wo])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_factors_rebuild_the_dense_map_in_onnx_runtime():
    rng = np.random.default_rng(1)
    columns, values = rng.normal(size=(6, 3, 3, 5)), np.array([0.4, -2.0, 1.5])
    attrs = {"pads": [1, 2, 1, 2], "strides": [2, 1], "dilations": [1, 2]}
    in_size, out_size = [13, 10], [7, 2]
    dense = padded_bias_map(columns, values, attrs, in_size, out_size)
    kernel, (rows, cols) = bias_map_factors(columns, values, attrs, in_size, out_size)
    zero = np.zeros((1, 6, *out_size), np.float32)
    rebuilt = run_model(_factored_model(kernel, rows, cols.T), {"x": zero})["y"][0]
    np.testing.assert_allclose(rebuilt, dense, rtol=1e-5, atol=1e-5)
    assert not np.allclose(dense, dense.mean(axis=(1, 2), keepdims=True))  # the border differs: a real map


def test_factored_size_is_smaller_than_dense_where_it_pays():
    # YOLOv8n's first 3x3 at 640: 16 channels over 320x320
    assert bias_map_size(16, [3, 3], [320, 320]) == 16 * 9 + 320 * 3 + 3 * 320
    assert bias_map_size(4, [3, 3], [2, 2]) == 4 * 2 * 2  # tiny outputs stay dense
    assert bias_map_size(8, [3], [100]) == 800  # 1-D Convs stay dense


def test_a_matmul_of_constants_costs_no_macs():
    kernel, rows, cols = np.ones((4, 3, 3)), np.ones((8, 3)), np.ones((3, 8))
    counts = count(_factored_model(kernel, rows, cols))
    assert counts.macs == 0 and counts.params == 4 * 9 + 8 * 3 + 3 * 8


def test_onnx_runtime_folds_the_factors_when_it_loads_the_model(tmp_path):
    import onnx
    import onnxruntime as ort

    model = _factored_model(np.ones((4, 3, 3)), np.ones((8, 3)), np.ones((3, 8)))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node] == ["Add"]
