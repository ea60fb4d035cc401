"""Feature targets at the pruned groups' boundaries: by tensor name and shape, or by the kept positions."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")

from onnxprune.train.features import Feature, boundary_features  # noqa: E402
from onnxprune.train.torchgraph import OnnxModule  # noqa: E402


def two_convs(width: int, seed: int = 0) -> onnx.ModelProto:
    """Conv(3 -> width) -> Relu -> Conv(width -> 4) -> Relu -> GAP: the middle is what pruning narrows."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w1", (width, 3, 3, 3)), ("w2", (4, width, 3, 3)))]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1] * 4),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"], name="pool"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph(
        nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_consumer_of_a_narrowed_tensor_is_the_boundary() -> None:
    teacher, student = OnnxModule(two_convs(8)), OnnxModule(two_convs(5))
    sample = {"x": np.zeros((2, 3, 8, 8), np.float32)}
    assert boundary_features(teacher, student, sample) == [Feature("c2")]
    kept = {"c1": np.array([0, 2, 3, 5, 7]), "r1": np.array([0, 2, 3, 5, 7])}
    found = boundary_features(teacher, student, sample, kept)
    assert found == [Feature("c2"), Feature("r1", (0, 2, 3, 5, 7))]


def test_kept_positions_that_do_not_fit_are_ignored() -> None:
    teacher, student = OnnxModule(two_convs(8)), OnnxModule(two_convs(5))
    sample = {"x": np.zeros((1, 3, 8, 8), np.float32)}
    assert boundary_features(teacher, student, sample, {"r1": np.array([0, 1])}) == [Feature("c2")]
    assert boundary_features(teacher, student, sample, {"r1": np.array([0, 1, 2, 3, 9])}) == [Feature("c2")]


def test_an_unpruned_model_has_no_boundary() -> None:
    model = OnnxModule(two_convs(8))
    assert boundary_features(model, model, {"x": np.zeros((1, 3, 8, 8), np.float32)}) == []


def test_the_teachers_value_is_its_kept_channels() -> None:
    value = torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2)
    picked = Feature("t", (1, 4)).teacher_value(value)
    assert torch.equal(picked, value[:, [1, 4]])
