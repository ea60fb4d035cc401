"""Proxy samples: a fully convolutional model's samples centre-cropped (and fewer where large)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnxprune.search.proxy import CROP, fully_convolutional, proxy


def _conv_model(height: int | str, width: int | str, head: str = "map") -> object:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    out_shape: list = ["N", 4, height, width]
    if head == "classes":
        nodes += [
            helper.make_node("GlobalAveragePool", ["y"], ["p"]),
            helper.make_node("Flatten", ["p"], ["z"]),
        ]
        out_shape = ["N", 4]
    output = "z" if head == "classes" else "y"
    graph = helper.make_graph(
        nodes, "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, height, width])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108).tolist())],
    )  # fmt: skip
    return helper.make_model(graph)


def test_a_detector_is_cropped_and_a_classifier_is_not() -> None:
    detector, classifier = _conv_model("H", "W"), _conv_model("H", "W", head="classes")
    assert fully_convolutional(detector) and not fully_convolutional(classifier)
    assert not fully_convolutional(_conv_model(640, 640))
    samples = {"x": np.random.default_rng(0).standard_normal((40, 3, 640, 480)).astype(np.float32)}
    cropped, what = proxy(samples, detector, 32)
    x = cropped["x"]
    assert x.shape[2:] == (CROP, CROP) and len(x) < 32 and "centre 320x320 crops" in what
    np.testing.assert_array_equal(x[0], samples["x"][0, :, 160:480, 80:400])
    whole, said = proxy(samples, classifier, 32)
    assert whole["x"].shape == (32, 3, 640, 480) and said == "32 calibration samples"
