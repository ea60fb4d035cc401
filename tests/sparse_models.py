"""Small models for the 2:4 tests, built in code: every weight route and every decline of issue 13."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 16  # the input's channels; tests pass min_channels=16 so that these small layers qualify


class Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def param(self, values: np.ndarray, hint: str = "w") -> str:
        self.count += 1
        name = f"{hint}{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def weight(self, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return self.rng.normal(0, np.sqrt(2 / fan_in), shape).astype(dtype)

    def node(self, op: str, inputs: list[str], name: str | None = None, **attrs: object) -> str:
        self.count += 1
        name = name or f"/{op.lower()}{self.count}/{op}"
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, name: str | None = None) -> str:
        w = self.param(self.weight((c_out, c_in // group, k, k)))
        b = self.param(self.rng.normal(0, 0.1, c_out).astype(np.float32), "b")
        return self.node("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)

    def model(self, output: str, inputs: list[onnx.ValueInfoProto] | None = None) -> onnx.ModelProto:
        inputs = inputs or [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", CHANNELS, 8, 8])]
        graph = helper.make_graph(
            self.nodes, "sparse", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            self.inits,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


def routes(seed: int = 0) -> onnx.ModelProto:
    """Eligible: a 3x3 Conv, a 1x1 Conv, a MatMul through Transpose, a Gemm through Cast (FP16 stored), a
    Gemm through DequantizeLinear (per-channel int8). Declined: a depthwise Conv, a Conv with C=24."""
    b = Builder(seed)
    x = b.node("Relu", [b.conv("input", CHANNELS, 32, name="/a/Conv")])
    x = b.node("Relu", [b.conv(x, 32, 32, group=32, name="/dw/Conv")])
    x = b.node("Relu", [b.conv(x, 32, 24, k=1, name="/b/Conv")])
    x = b.node("Relu", [b.conv(x, 24, 16, k=1, name="/c24/Conv")])
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    stored = b.param(b.weight((32, 16)))  # [N, K] as PyTorch stores a Linear: MatMul sees its transpose
    x = b.node("Relu", [b.node("MatMul", [x, b.node("Transpose", [stored], perm=[1, 0])], "/mm/MatMul")])
    half = b.param(b.weight((32, 16), np.float16))  # [K, N], transB=0
    cast = b.node("Cast", [half], to=TensorProto.FLOAT)
    x = b.node("Relu", [b.node("Gemm", [x, cast], "/fp16/Gemm")])
    q = b.rng.integers(-100, 100, (16, 16)).astype(np.int8)
    scale = b.param(b.rng.uniform(0.005, 0.02, 16).astype(np.float32), "s")
    zero = b.param(b.rng.integers(-3, 3, 16).astype(np.int8), "z")
    dq = b.node("DequantizeLinear", [b.param(q, "q"), scale, zero], axis=0)
    return b.model(b.node("Gemm", [x, dq], "/qdq/Gemm", transB=1))


ELIGIBLE = ["/a/Conv", "/b/Conv", "/mm/MatMul", "/fp16/Gemm", "/qdq/Gemm"]


def declines(seed: int = 0) -> onnx.ModelProto:
    """A weight computed at run time, one shared by two layers, a float64 and an int32 weight."""
    b = Builder(seed)
    flat = b.node("Flatten", [b.node("GlobalAveragePool", ["input"])], axis=1)  # [N, 16]
    computed = b.node("Relu", [b.param(b.weight((16, 16)))])
    x = b.node("MatMul", [flat, computed], "/runtime/MatMul")
    shared = b.param(b.weight((16, 16)))
    x = b.node("MatMul", [b.node("MatMul", [x, shared], "/shared1/MatMul"), shared], "/shared2/MatMul")
    wide = b.node("Cast", [x], to=TensorProto.DOUBLE)
    x = b.node("Cast", [b.node("MatMul", [wide, b.param(b.weight((16, 16), np.float64))], "/f64/MatMul")],
               to=TensorProto.FLOAT)  # fmt: skip
    ints = b.node("Cast", [x], to=TensorProto.INT32)
    x = b.node("MatMul", [ints, b.param(np.ones((16, 16), np.int32))], "/int/MatMul")
    return b.model(b.node("Cast", [x], to=TensorProto.FLOAT))


def conv_only(**attrs: object) -> onnx.ModelProto:
    """One Conv (16 → 32, 3x3) with the given attributes and no bias, for the im2col check."""
    b = Builder(1)
    w = b.param(b.weight((32, CHANNELS, 3, 3)))
    return b.model(b.node("Conv", ["input", w], "/only/Conv", kernel_shape=[3, 3], **attrs))


def correlated_samples(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs whose channels are strongly correlated (rank 4 per pixel, plus a little noise): where a
    second-order selection should clearly beat magnitude."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(0, 1, (CHANNELS, 4))
    z = rng.normal(0, 1, (count, 4, 8, 8))
    x = np.einsum("ck,nkhw->nchw", mix, z) + 0.05 * rng.normal(0, 1, (count, CHANNELS, 8, 8))
    return {"input": x.astype(np.float32)}


def branches(seed: int = 0) -> onnx.ModelProto:
    """Two parallel Convs on the input (3x3 and 1x1), added, then a Conv chain: waves [[p, q], [r], [s]]."""
    b = Builder(seed)
    p = b.conv("input", CHANNELS, 32, name="/p/Conv")
    q = b.conv("input", CHANNELS, 32, k=1, name="/q/Conv")
    x = b.node("Relu", [b.node("Add", [p, q])])
    x = b.node("Relu", [b.conv(x, 32, 32, name="/r/Conv")])
    return b.model(b.conv(x, 32, 16, k=1, name="/s/Conv"))
