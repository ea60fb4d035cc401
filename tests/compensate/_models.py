"""Tiny original/pruned model pairs, written by hand so each test knows the exact answer."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def model(
    nodes, inits: dict[str, np.ndarray], outputs=("y",), channels: int = 4, hw: int = 6
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, hw, hw])
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
    tensors = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, "g", [x], outs, tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def conv(name: str, x: str, w: str, out: str, b: str | None = None, group: int = 1, pad: int = 1):
    inputs = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", inputs, [out], name=name, pads=[pad] * 4, group=group)


def samples(
    n: int, channels: int = 4, hw: int = 6, seed: int = 0, mean: float = 0.0
) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, channels, hw, hw)) + mean
    return {"x": x.astype(np.float32)}


def run(m: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from onnxprune.runtime import run_model

    return run_model(m, feed)
