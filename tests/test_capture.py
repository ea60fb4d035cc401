"""capture.py: cut models, many samples per call, and the fallback where a graph bakes its batch in."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.capture import Runner, subset


def _baked_batch_model():
    """x [1, 4] -> Relu -> Reshape to the constant [1, 4] -> Neg -> y: only batch 1 runs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["s"], name="reshape"),
        helper.make_node("Neg", ["s"], ["y"], name="neg"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_subset_keeps_only_what_the_wanted_tensors_need():
    cut = subset(_baked_batch_model(), ["r"])
    assert [n.name for n in cut.graph.node] == ["relu"] and not cut.graph.initializer
    assert [o.name for o in cut.graph.output] == ["r"]


def test_static_batch_that_the_graph_bakes_in_falls_back_to_it():
    data = {"x": np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)}
    runner = Runner(_baked_batch_model(), ["y", "r"], static_batch=1)
    spans, parts = [], []
    for start, stop, values in runner.run(data):
        spans.append((start, stop))
        parts.append(values["y"])
    np.testing.assert_allclose(np.concatenate(parts), -np.maximum(data["x"], 0))
    assert spans[0] == (0, 1) and spans[-1][1] == 5 and runner.batch == 1


def test_dynamic_copy_runs_many_samples_per_call():
    data = {"x": np.ones((6, 4), np.float32)}
    runner = Runner(_baked_batch_model(), ["r"], static_batch=1)  # the cut has no Reshape: batch is free
    spans = [(start, stop) for start, stop, _ in runner.run(data)]
    assert spans == [(0, 1), (1, 6)]
