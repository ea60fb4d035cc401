"""capture.py: cut models, many samples per call, and the fallback where a graph bakes its batch in."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.capture import Runner, batch_size, subset


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


def test_a_large_input_bounds_the_batch_though_the_wanted_tensors_are_small() -> None:
    """A deep layer's 20x20 input is small, but a run at 640x640 holds the stem's activations too."""
    detector = {"x": np.zeros((1, 3, 640, 640), np.float32)}
    assert batch_size(detector, {"deep": np.zeros((1, 96, 20, 20), np.float32)}) == 1
    digits = {"x": np.zeros((1, 1, 28, 28), np.float32)}
    assert batch_size(digits, {"deep": np.zeros((1, 32, 7, 7), np.float32)}) == 64
    assert batch_size(digits, {"wide": np.zeros((1, 256, 64, 64), np.float32)}) == 8, "the outputs' bytes"
